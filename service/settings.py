"""Every setting of the service in one object, read from flags, environment and a config file.

Precedence, highest first: values passed in code (the CLI's flags), environment variables
(``PROLIP_<NAME>``; ``REDIS_URL`` and ``ENCODER`` are also read bare, as Compose files
and the encoder workers use them), a TOML config file (``PROLIP_CONFIG`` or ``--config``),
then the defaults below. Lists are given as comma-separated strings in the environment.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "PROLIP_"
CONFIG_ENV = "PROLIP_CONFIG"
MiB = 1024 * 1024
# what a collection may be called (as the indexer allows); a JSON-Schema pattern, so anchored
COLLECTION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_K = 1000  # the index's own cap on results per query (indexer.config.MAX_K; a test checks they agree)

# the config file of the Settings being built (set by load_settings, read by the source hook)
_config_file: ContextVar[Path | None] = ContextVar("prolip_config_file", default=None)

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """The service's configuration; each field is the env var ``PROLIP_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True,
                                      populate_by_name=True)

    # --- model and encoding
    model_source: str | None = Field(
        None, description="model folder, hf-hub:<repo> or arch:<name>; unset = the embedded demo model")
    model_family: Literal["prolip", "pcmepp", "clip"] | None = Field(
        None, description="override the model family detected from the checkpoint's config (unset: detect: "
                          "unc_layers -> pcmepp, embed_unc -> prolip, else clip)")
    backend: Literal["torch", "onnx"] = Field("torch", description="inference backend for the local encoder")
    device: str = Field("auto", description="auto (GPU when usable), cpu, cuda, cuda:1 ...")
    dtype: str = Field("auto", description="auto (fp32 on CPU, fp16 on GPU), fp32, fp16, bf16")
    encoder: Literal["local", "remote"] = Field(
        "local", validation_alias=AliasChoices("PROLIP_ENCODER", "ENCODER", "encoder"),
        description="local: encode in this process; remote: send queries to GPU encoder workers via Redis")
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("PROLIP_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis for remote encoding, jobs and shared index metadata (e.g. redis://redis:6379/0)")
    encoder_batch_size: int = Field(64, ge=1, le=4096, description="inputs per model call for bulk encoding")
    remote_timeout_s: float = Field(10.0, gt=0, le=600, description="encoder=remote: longest wait for a worker")
    calibration: Path | None = Field(
        None, description="the model's match-probability calibrator (prolip-retrieval calibrate); unset = "
                          "calibration.json in the model's folder if there is one (set it for a folder you cannot "
                          "write, e.g. a hub cache)")
    redis_require_fsync: bool = Field(
        True, description="refuse a Redis that does not fsync its append-only file on every write (appendonly yes, "
                          "appendfsync always); false accepts losing acknowledged writes on a crash")

    # --- storage and demo
    data_dir: Path = Field(Path("data"), description="collections, images and job records live here")
    milvus_uri: str | None = Field(
        None, description="keep collections in Milvus: http://host:19530 (Standalone/Distributed) or a local file "
                          "(Milvus Lite in this process); with REDIS_URL too, replicas keep no state of their own")
    milvus_token: SecretStr | None = Field(None, description="Milvus credentials (user:password or an API key)")
    milvus_prefix: str = Field("prolip", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                               description="prefix of this deployment's Milvus collection names")
    milvus_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong", description="Milvus read consistency; Strong: every read sees every acknowledged write, from any "
                              "replica (waits up to one WAL time tick, 200 ms by default)")
    milvus_index: str | None = Field(
        None, description="Milvus index type for new collections (e.g. HNSW, IVF_SQ8, DISKANN, GPU_CAGRA); "
                          "unset = from each collection's spec (FLAT for kind auto)")
    media_dir: Path | None = Field(
        None, description="uploaded images; unset = <data_dir>/.media. Replicas must share it (a shared volume)")
    job_chunk_size: int = Field(128, ge=1, le=100_000, description="items per job chunk: the unit of commit, "
                                "resume and distribution")
    job_lease_s: float = Field(15.0, gt=0, le=3600, description="shared jobs (Milvus + Redis): a job whose "
                               "replica stopped renewing its lease this long is taken over by another replica")
    demo: bool = Field(True, description="index the demo collections when the data dir is new and empty")
    demo_scenes: int = Field(600, ge=1, le=100_000, description="scenes in the demo collections")

    # --- dynamic batching of queries
    batching: bool = Field(True, description="batch concurrent queries for the encoder")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most inputs in one batched encoder call")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="longest a batch waits for more queries before it runs; 0: it runs as soon "
                                        "as the encoder is free, with what queued meanwhile (measured best under load)")
    latency_budget_ms: float = Field(
        50.0, ge=0, le=60_000, description="a batch stops waiting for company once its oldest query's wait plus the "
                                           "batch's expected run time would pass this (lower: shorter waits)")
    max_queue: int = Field(256, ge=1, le=100_000, description="queued encoding requests before answering 429")
    deadline_ms: float = Field(
        10_000.0, gt=0, le=600_000, description="longest a query may wait in a batch queue: refused at once with 429 "
                                                "when the queue ahead would take longer, 503 when it passes")
    encoder_batches_in_flight: int | None = Field(
        None, ge=1, le=64, description="encoder batches run at once; unset: 1 for torch (it uses every core per "
                                       "call), 2 for onnx, 4 for remote workers")
    search_batches_in_flight: int = Field(2, ge=1, le=64, description="index search batches run at once")

    # --- access
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted API keys (comma-separated); empty = no auth")
    api_key_header: str = Field("X-API-Key", description="header carrying the key (Authorization: Bearer also works)")
    rate_limit_per_minute: float = Field(0, ge=0, description="requests per minute per key (or client); 0 = off")
    rate_limit_burst: int = Field(20, ge=1, description="requests a key may make at once before being limited")
    cors_origins: CommaList = Field(default_factory=list, description="allowed CORS origins; empty = CORS off")

    # --- limits on what a request may ask for
    max_request_bytes: int = Field(64 * MiB, ge=1024, description="largest request body")
    max_upload_bytes: int = Field(16 * MiB, ge=1024, description="largest single uploaded file")
    max_files: int = Field(64, ge=1, description="most uploaded files in one request")
    max_texts: int = Field(256, ge=1, description="most texts in one request")
    max_text_chars: int = Field(2000, ge=1, description="longest text accepted")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest decoded image (decompression bombs)")
    max_request_pixels: int = Field(160_000_000, ge=1, description="most pixels of all the images of one request")
    max_decoding_pixels: int = Field(
        96_000_000, ge=1, description="budget of decoded pixels held at once by all requests together; each "
                                      "costs at most 9 bytes (WebP counts twice), so images use at most 9 bytes "
                                      "x this (requests wait their turn)")
    decode_wait_s: float = Field(30.0, gt=0, le=600, description="longest a request waits for room in the decoding "
                                                                 "budget before answering 429")
    max_k: int = Field(MAX_K, ge=1, le=MAX_K, description="most results one search may return")
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="largest JSON metadata of one item")

    # --- jobs
    job_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="folders batch jobs may read from (comma-separated); empty = none")
    url_fetch_timeout_s: float = Field(10.0, gt=0, le=120, description=(
        "/v1/search/url: longest wait for the image's server, per attempt (one retry on a transient failure)"))
    allow_private_urls: bool = Field(
        False, description="let jobs and /v1/search/url fetch URLs resolving to loopback, private or link-local "
                           "addresses (off: a user's manifest or query could otherwise read the service's own network)")

    @field_validator("api_keys", "job_roots", "cors_origins", mode="before")
    @classmethod
    def _lists_from_commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if len(key.get_secret_value()) < 8:
                raise ValueError("API keys must be at least 8 characters")
        return keys

    @property
    def shared_state(self) -> bool:
        """Collections in Milvus and jobs, leases and rate limits in Redis: replicas keep no state of their own."""
        return bool(self.milvus_uri and self.redis_url)

    @model_validator(mode="after")
    def _remote_needs_redis(self) -> Settings:
        if self.encoder == "remote" and not self.redis_url:
            raise ValueError("encoder=remote needs a Redis URL (REDIS_URL or PROLIP_REDIS_URL)")
        if self.max_upload_bytes > self.max_request_bytes:
            raise ValueError("max_upload_bytes cannot exceed max_request_bytes")
        if self.max_decoding_pixels < self.max_image_pixels:
            raise ValueError("max_decoding_pixels must be at least max_image_pixels (or no image of the largest "
                             "size could ever be decoded)")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(config_file: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Build the Settings: ``overrides`` (flags) > environment > config file > defaults.

    ``config_file`` defaults to ``$PROLIP_CONFIG``; a named file that does not exist is an error.
    Overrides whose value is None are ignored, so unset CLI flags fall through.
    """
    path = config_file or os.environ.get(CONFIG_ENV)
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
    token = _config_file.set(Path(path) if path else None)
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    finally:
        _config_file.reset(token)


def describe() -> str:
    """One line per setting: env var, default as it would be written there, and meaning (for the README)."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        lines.append(f"{ENV_PREFIX}{name.upper():<28} default {env_value(default)}: {field.description}")
    return "\n".join(lines)


def env_value(value: Any) -> str:
    """A value as one would set it in the environment: true/false, comma-separated lists, (unset)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(env_value(item) for item in value) if value else "(empty)"
    if isinstance(value, SecretStr):
        return "(secret)"
    return str(value)
