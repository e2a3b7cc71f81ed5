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
