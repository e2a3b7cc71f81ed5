"""Settings: flags over environment over config file over defaults; clear errors."""

import pytest
from pydantic import ValidationError

from service.settings import describe, load_settings


def test_precedence_flags_env_file_defaults(tmp_path, monkeypatch):
    config = tmp_path / "prolip.toml"
    config.write_text('max_k = 50\nmax_texts = 9\ndevice = "cpu"\napi_keys = ["from-file-key"]\n')
    monkeypatch.setenv("PROLIP_MAX_K", "70")
    monkeypatch.setenv("PROLIP_CORS_ORIGINS", "http://a.example, http://b.example")
    settings = load_settings(config, max_texts=None, device="cuda")
    assert settings.max_k == 70  # env beats file
    assert settings.max_texts == 9  # file beats default; a None flag does not count
    assert settings.device == "cuda"  # flag beats all
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert [k.get_secret_value() for k in settings.api_keys] == ["from-file-key"]
    assert settings.max_batch_size == 32  # default


def test_bare_redis_url_and_encoder_are_read(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("ENCODER", "remote")
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6399/0" and settings.encoder == "remote"


def test_bad_values_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="max_k"):
        load_settings(max_k=0)
    monkeypatch.setenv("ENCODER", "remote")
    with pytest.raises(ValidationError, match="needs a Redis URL"):
        load_settings()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    (tmp_path / "typo.toml").write_text("max_kk = 3\n")
    monkeypatch.delenv("ENCODER")
    with pytest.raises(ValidationError, match="max_kk"):
        load_settings(tmp_path / "typo.toml")


def test_every_setting_is_documented():
    text = describe()
    for name in ("PROLIP_DATA_DIR", "PROLIP_API_KEYS", "PROLIP_MAX_WAIT_MS", "PROLIP_REDIS_URL"):
        assert name in text
    assert all(": None" not in line for line in text.splitlines())  # every field has a description


def test_the_k_cap_of_the_api_schema_is_the_index_cap():
    from indexer.config import MAX_K as INDEX_MAX_K
    from service.settings import MAX_K

    assert MAX_K == INDEX_MAX_K


def test_settings_command_prints_defaults_as_they_are_written_in_the_environment(capsys):
    """Issue #16, defect 14: `settings` printed PosixPath('data'), [] and None."""
    import re

    from service.cli import main

    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    defaults = [re.match(r"^PROLIP_\w+\s+default (.*?): ", line).group(1) for line in out.splitlines()]
    assert len(defaults) > 30
    for value in defaults:
        assert not any(python in value for python in ("PosixPath", "[", "None", "'", "Secret")), value
    assert re.search(r"^PROLIP_DATA_DIR\s+default data: ", out, re.M)
    assert re.search(r"^PROLIP_DEMO\s+default true: ", out, re.M)
    assert re.search(r"^PROLIP_API_KEYS\s+default \(empty\): ", out, re.M)
    assert re.search(r"^PROLIP_MODEL_SOURCE\s+default \(unset\): ", out, re.M)


def _cli(*args, env=None, **kwargs):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": str(root), "PROLIP_DEVICE": "cpu", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=root, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _one_line_error(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert process.returncode == 2, (process.returncode, err[-2000:])
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    return lines[0]


def test_serve_refuses_a_missing_job_root_in_one_line(tmp_path, model_dir):
    """Issue #16, defect 9: a missing PROLIP_JOB_ROOTS folder crashed start-up with a traceback."""
    line = _one_line_error(_cli("serve", "--data-dir", str(tmp_path / "data"), "--port", "1",
                                env={"PROLIP_JOB_ROOTS": str(tmp_path / "not-there"),
                                     "PROLIP_MODEL_SOURCE": str(model_dir)}))
    assert "job root" in line and "not-there" in line and "is not a folder" in line


def test_serve_names_the_redis_setting_when_redis_does_not_fsync(tmp_path, model_dir):
    """Issue #16, defect 11: the refusal suggested redis_require_fsync=False, a Python argument."""
    from tests.processes import start_redis

    redis_process, url = start_redis(tmp_path / "redis", durable=False)
    try:
        line = _one_line_error(_cli("serve", "--data-dir", str(tmp_path / "data"), "--port", "1",
                                    env={"PROLIP_REDIS_URL": url, "PROLIP_MODEL_SOURCE": str(model_dir)}))
    finally:
        redis_process.kill()
        redis_process.wait(10)
    assert "--appendfsync always" in line and "PROLIP_REDIS_REQUIRE_FSYNC=false" in line
    assert "redis_require_fsync=False" not in line


def test_cli_user_errors_are_one_line_and_a_closed_pipe_is_quiet(tmp_path):
    """Issue #16, defect 11: `collections stats nosuch` and piping to `head` ended in tracebacks."""
    line = _one_line_error(_cli("collections", "stats", "nosuch", "--data-dir", str(tmp_path / "data")))
    assert "no collection named 'nosuch'" in line
    reader_gone = _cli("settings")
    reader_gone.stdout.close()  # like `| head` exiting before the command writes
    err = reader_gone.stderr.read()
    assert reader_gone.wait(60) == 141 and "Traceback" not in err and "Broken pipe" not in err, err
