import subprocess
import sys

import pytest

from config import ConfigError, config_for
from portal import create_app


def test_production_refuses_to_start_without_its_secrets(monkeypatch):
    cls = config_for("production")
    monkeypatch.setattr(cls, "SECRET_KEY", None)
    monkeypatch.setattr(cls, "TIDEMARK_ENCRYPTION_KEY", None)
    with pytest.raises(ConfigError, match="SECRET_KEY and TIDEMARK_ENCRYPTION_KEY"):
        create_app("production")


def test_production_cookies_are_secure_by_default(monkeypatch):
    cls = config_for("production")
    monkeypatch.setattr(cls, "SECRET_KEY", "x" * 32)
    monkeypatch.setattr(cls, "TIDEMARK_ENCRYPTION_KEY", "k")
    app = create_app("production")
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_development_generates_its_keys_once_and_keeps_them(tmp_path):
    # A fresh interpreter, because the instance folder is read at import time.
    script = (
        "from portal import create_app; a = create_app('development'); "
        "print(a.config['SECRET_KEY']); print(a.config['TIDEMARK_ENCRYPTION_KEY'])"
    )
    env = {"TIDEMARK_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout and len(first.stdout.split()) == 2
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "encryption.key").exists()


def test_unknown_environment_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="not one of"):
        config_for("staging-ish")
