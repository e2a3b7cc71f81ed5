"""`prolip-retrieval serve`: the search API (with demo collections in a new data dir)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the search API",
        description="Serve the HTTP search API. Every setting is also an environment variable "
                    "(PROLIP_<NAME>, see `prolip-retrieval settings`); flags win over the environment, "
                    "which wins over --config.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", default=None, help="collections and job records (default: data)")
    serve.add_argument("--config", default=None, help="TOML file of settings (default: $PROLIP_CONFIG)")
    serve.add_argument("--model", dest="model_source", default=None,
                       help="model folder, hf-hub:<repo> or arch:<name> (default: the embedded demo model)")
    serve.add_argument("--family", dest="model_family", default=None, choices=("prolip", "pcmepp", "clip"),
                       help="override the model family detected from the checkpoint's config")
    serve.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto)")
    serve.add_argument("--backend", default=None, choices=("torch", "onnx"), help="local inference backend")
    serve.add_argument("--no-demo", dest="demo", action="store_const", const=False, default=None,
                       help="do not index the demo collections into a new data dir")
    serve.set_defaults(run=_serve)

    settings = subparsers.add_parser("settings", help="list every setting, its environment variable and default")
    settings.set_defaults(run=_settings)


def _serve(args: argparse.Namespace) -> int:
    from .settings import load_settings

    settings = load_settings(args.config, data_dir=args.data_dir, model_source=args.model_source,
                             model_family=args.model_family, device=args.device, backend=args.backend, demo=args.demo)
    lock = preflight(settings, f"prolip-retrieval serve on http://{args.host}:{args.port}")
    try:
        import uvicorn  # after the checks: a refusal comes before the app is even imported

        from .app import create_app

        app = create_app(settings)
        log.info("serving on http://%s:%d (API docs at /docs)", args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port,
                    log_level=logging.getLevelName(log.getEffectiveLevel()).lower(), proxy_headers=True)
    finally:
        lock.release()
    return 0


def preflight(settings, purpose: str):
    """What would otherwise fail at start-up as a traceback, checked first with one clear line each.

    Returns the data dir's lock, held (one server per data dir).
    """
    from indexer.datadir import DataDirLock

    for root in settings.job_roots:
        if not root.expanduser().is_dir():
            raise ValueError(f"job root {root} (PROLIP_JOB_ROOTS) is not a folder; create it or leave it out")
    lock = DataDirLock(settings.data_dir, purpose).acquire()  # cheap, so first: a second server stops here
    try:
        if settings.encoder == "local":  # a missing model
            from models.loading import default_model_source, load_config

            load_config(settings.model_source or default_model_source(), settings.model_family)
        if settings.redis_url:
            _check_redis(settings)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_redis(settings) -> None:
    import redis

    from indexer.errors import StoreError
    from indexer.stores.redis import check_durability

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
        check_durability(client, settings.redis_require_fsync)
    except redis.RedisError as error:
        raise StoreError(f"cannot reach Redis at {settings.redis_url} (PROLIP_REDIS_URL / REDIS_URL): "
                         f"{error}") from None
    finally:
        client.close()


def _settings(args: argparse.Namespace) -> int:
    from .settings import describe

    print(describe())
    return 0
