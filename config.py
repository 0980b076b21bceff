"""Settings, one class per environment, every value from an environment variable.

Pick the class with TIDEMARK_ENV (development, testing, production); development is the default
so that `make run` and the `flask` command work on a fresh checkout.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("TIDEMARK_INSTANCE_DIR", BASE_DIR / "instance"))


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def kept_secret(filename: str, make: callable) -> str:
    """A development secret generated once and kept in instance/, so restarts keep sessions
    and encrypted values readable."""
    path = INSTANCE_DIR / filename
    if path.exists():
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def portal_url_for_bind(bind: str, *, local: bool = False) -> str | None:
    """The portal's address for gunicorn's --bind (host:port, [v6]:port, or unix:path; None for
    a socket). A wildcard host is this machine's name, or, with local, the loopback address the
    stack itself can reach."""
    if not bind or bind.startswith(("unix:", "fd://")):
        return None
    host, _, port = bind.rpartition(":")
    if not host or bind.endswith("]"):  # gunicorn takes a bare host too, on its port 8000
        host, port = bind, "8000"
    if host in ("0.0.0.0", "", "[::]"):
        host = ("[::1]" if host == "[::]" else "127.0.0.1") if local else socket.getfqdn()
    return f"http://{host}" + ("" if port == "80" else f":{port}")


class ConfigError(RuntimeError):
    """The environment is not fit to start this configuration."""


def env_networks(name: str) -> tuple:
    """Comma-separated networks (CIDR, or one address) from the environment, read at start-up."""
    networks = []
    for part in os.environ.get(name, "").split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {part.strip()!r} is not a network like 10.0.0.0/8 or fd00::/8.") from None
    return tuple(networks)


class Config:
    ENV_NAME = "base"
    TESTING = False

    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'tidemark.sqlite3'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    SECRET_KEY = os.environ.get("SECRET_KEY")
    TIDEMARK_ENCRYPTION_KEY = os.environ.get("TIDEMARK_ENCRYPTION_KEY")
    # 1 = jobs run inline in the calling process instead of on Redis (command line, tests).
    TIDEMARK_JOBS_SYNC = env_flag("TIDEMARK_JOBS_SYNC")
    TIDEMARK_QUEUE = os.environ.get("TIDEMARK_QUEUE", "tidemark")
    # Seconds a lock on a mailbox's fetch or on the sending run lasts; its holder renews it every
    # third of that, so a lock left by a killed worker is free again within this time.
    TIDEMARK_LOCK_SECONDS = env_int("TIDEMARK_LOCK_SECONDS", 60)
    # PostgreSQL: seconds after which either end of a connection whose other end vanished (a
    # machine gone, a network cut) gives it up, rather than the system's two hours and more; the
    # server then ends the session, freeing the sending run's lock and any open transaction's.
    TIDEMARK_DB_DEAD_PEER_SECONDS = env_int("TIDEMARK_DB_DEAD_PEER_SECONDS", 60)
    # The right-hand side of our Message-IDs and the value of our loop header. Every machine must
    # give the same one (a worker tells our own mail by the header another machine's worker wrote):
    # the portal's host when its address is given, as it must be for links anyway; else this machine's.
    TIDEMARK_MAIL_HOST = (os.environ.get("TIDEMARK_MAIL_HOST")
                          or urlsplit(os.environ.get("TIDEMARK_PORTAL_URL", "")).hostname
                          or socket.getfqdn() or "tidemark.localdomain")
    # Where the portal is reached, for links in email. Unset, it follows the address `make run`
    # serves on (workers.stack passes TIDEMARK_BIND to the portal and the worker).
    TIDEMARK_PORTAL_URL = (os.environ.get("TIDEMARK_PORTAL_URL")
                           or portal_url_for_bind(os.environ.get("TIDEMARK_BIND", "127.0.0.1:5000"))
                           or "http://127.0.0.1:5000")
    # Who may change installation-wide settings (the default SMTP gateway, staging switches)
    # when the installation hosts several MSPs: comma-separated emails. With one MSP, its admins.
    TIDEMARK_OPERATORS = [e.strip().lower() for e in os.environ.get("TIDEMARK_OPERATORS", "").split(",") if e.strip()]
    # Where the LMTP listener (python -m workers.lmtp) listens, HOST:PORT or unix:/path: its default
    # --listen, and what an LMTP mailbox's page shows and its "Test connection" tries.
    TIDEMARK_LMTP_LISTEN = os.environ.get("TIDEMARK_LMTP_LISTEN") or None
    # Operators' token for GET /metrics (Prometheus text); unset, /metrics answers 404.
    TIDEMARK_METRICS_TOKEN = os.environ.get("TIDEMARK_METRICS_TOKEN") or None
    # Extra CA certificates (PEM) trusted for mailbox servers, e.g. an MSP's internal CA.
    TIDEMARK_CA_FILE = os.environ.get("TIDEMARK_CA_FILE") or None
    # With several MSPs, servers they type in may not be loopback, link-local, unspecified,
    # multicast or reserved addresses: ALLOWED opens networks anyway, DENIED closes more (even
    # private ones). Comma-separated CIDRs; filled in by finish().
    TIDEMARK_ALLOWED_SERVER_NETWORKS: tuple = ()
    TIDEMARK_DENIED_SERVER_NETWORKS: tuple = ()

    # Sign-in throttling: failures counted over a sliding window.
    LOGIN_WINDOW = timedelta(minutes=env_int("TIDEMARK_LOGIN_WINDOW_MINUTES", 15))
    LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("TIDEMARK_LOGIN_MAX_PER_ACCOUNT", 5)
    LOGIN_MAX_FAILURES_PER_IP = env_int("TIDEMARK_LOGIN_MAX_PER_IP", 20)

    SESSION_COOKIE_NAME = "tidemark_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = env_flag("TIDEMARK_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PERMANENT_SESSION_LIFETIME = timedelta(hours=env_int("TIDEMARK_SESSION_HOURS", 12))
    # htmx-boosted pages never reload <body>, so a token that expires would break them.
    WTF_CSRF_TIME_LIMIT = None
    WTF_CSRF_HEADERS = ["X-CSRFToken"]

    # Number of proxies in front of the app whose X-Forwarded-For we trust (0 = none).
    TIDEMARK_PROXY_COUNT = env_int("TIDEMARK_PROXY_COUNT", 0)
    TIDEMARK_PAGE_SIZE = env_int("TIDEMARK_PAGE_SIZE", 50)
    # gunicorn's threads per worker process (workers/stack.py): each open live stream holds one.
    TIDEMARK_WEB_THREADS = env_int("TIDEMARK_WEB_THREADS", 16)
    # Files a technician attaches to one reply (inline images count too): each, and all together.
    TIDEMARK_REPLY_FILE_MAX_BYTES = env_int("TIDEMARK_REPLY_FILE_MAX_MB", 10) * 1024 * 1024
    TIDEMARK_REPLY_FILES_MAX_BYTES = env_int("TIDEMARK_REPLY_FILES_MAX_MB", 25) * 1024 * 1024
    # A configuration file to import (the portal's page and `flask config import`): its size, and how many
    # values (mappings, lists and scalars together) it may hold.
    TIDEMARK_CONFIG_MAX_BYTES = env_int("TIDEMARK_CONFIG_MAX_KB", 1000) * 1000
    TIDEMARK_CONFIG_MAX_ENTRIES = env_int("TIDEMARK_CONFIG_MAX_ENTRIES", 10_000)
    # The largest request: a reply's files and its text. A bigger one is refused before it is read.
    MAX_CONTENT_LENGTH = TIDEMARK_REPLY_FILES_MAX_BYTES + 5 * 1024 * 1024
    # One form field in memory (Flask's default is 500 KB): the editor's HTML of a long reply with
    # its quoted history, or an email pasted into the routing check.
    MAX_FORM_MEMORY_SIZE = 6 * 1024 * 1024

    @classmethod
    def finish(cls) -> None:
        """Fill in what depends on the environment at start-up; raise ConfigError if unfit."""
        cls.TIDEMARK_ALLOWED_SERVER_NETWORKS = env_networks("TIDEMARK_ALLOWED_SERVER_NETWORKS")
        cls.TIDEMARK_DENIED_SERVER_NETWORKS = env_networks("TIDEMARK_DENIED_SERVER_NETWORKS")


class DevelopmentConfig(Config):
    ENV_NAME = "development"

    @classmethod
    def finish(cls) -> None:
        super().finish()
        if not cls.SECRET_KEY:
            cls.SECRET_KEY = kept_secret("secret_key", lambda: secrets.token_hex(32))
        if not cls.TIDEMARK_ENCRYPTION_KEY:
            cls.TIDEMARK_ENCRYPTION_KEY = kept_secret(
                "encryption.key", lambda: Fernet.generate_key().decode()
            )


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production"
    TIDEMARK_ENCRYPTION_KEY = Fernet.generate_key().decode()
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    TIDEMARK_JOBS_SYNC = True


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = env_flag("TIDEMARK_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE

    @classmethod
    def finish(cls) -> None:
        super().finish()
        missing = [n for n in ("SECRET_KEY", "TIDEMARK_ENCRYPTION_KEY") if not getattr(cls, n)]
        if missing:
            raise ConfigError(
                "Production needs " + " and ".join(missing) + " in the environment; refusing to start."
            )
        if not os.environ.get("TIDEMARK_PORTAL_URL"):
            logging.getLogger("tidemark.config").warning(
                "TIDEMARK_PORTAL_URL is not set: links in emails will point at %s. Set it to the address "
                "people use to reach the portal, e.g. https://tickets.example.com.", cls.TIDEMARK_PORTAL_URL)


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_for(name: str | None = None) -> type[Config]:
    name = (name or os.environ.get("TIDEMARK_ENV") or "development").lower()
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"TIDEMARK_ENV={name!r} is not one of {', '.join(CONFIGS)}") from None
