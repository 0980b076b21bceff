"""Secrets are nowhere but where they are needed (issue #20): an installation holding every kind
of secret (a mailbox password, an outgoing server's and the gateway's passwords, an OAuth2 client
secret, refresh and access tokens, an MSP's Microsoft 365 app secret), used by failing connection
tests and fetches, shows none of them in clear in any page, any log line, the database, Redis, or
the configuration file without --with-secrets; with it, the file has them (so the search works)."""

import logging
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text

from portal.extensions import db
from portal.inbound.fetch import run_fetch
from portal.models import MailboxOAuth
from portal.models.base import utcnow
from portal.outbound import servers
from portal.services import commit, config_io, microsoft_app
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailboxes import check_connection
from portal.transport import open_session
from tests.portal.test_route_sweep import one_of_everything, signed_in, sweep

SECRETS = {
    "mailbox password": "MAILBOX-PW-9f1c2e",
    "outgoing password": "OUTGOING-PW-4b7d0a",
    "gateway password": "GATEWAY-PW-c3e8f1",
    "client secret": "CLIENT-SECRET-7a2b9d",
    "refresh token": "REFRESH-TOKEN-e5f6a7",
    "access token": "ACCESS-TOKEN-1d2c3b",
    "app secret": "APP-SECRET-0e9f8d7c6b5a",
}


def closed_port() -> int:
    import socket  # noqa: PLC0415 - only to find a port nobody listens on

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def installation(app, world):
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    owner = one_of_everything(app, world, "Alpha")
    nobody = closed_port()
    box = world.mailbox(owner.msp, address="pw@alpha.example", host="127.0.0.1", port=nobody, security="none",
                        username="pw", password=SECRETS["mailbox password"])
    servers.save_smtp_server({"host": "127.0.0.1", "port": nobody, "security": "none", "timeout": 5,
                              "verify_tls": True, "username": "out", "password": SECRETS["outgoing password"]},
                             keys=keys, mailbox=box)
    servers.save_smtp_server({"host": "127.0.0.1", "port": nobody, "security": "none", "timeout": 5,
                              "verify_tls": True, "username": "gw", "password": SECRETS["gateway password"]},
                             keys=keys)
    oauth_box = world.mailbox(owner.msp, address="oauth@alpha.example", host="127.0.0.1", port=nobody,
                              security="none", username="oauth", password=None, auth="oauth2", oauth={
                                  "provider": "generic", "flow": "delegated", "client_id": "tidemark",
                                  "client_secret": SECRETS["client secret"], "scopes": ["mail"],
                                  "token_url": f"http://127.0.0.1:{nobody}/token",
                                  "authorize_url": f"http://127.0.0.1:{nobody}/authorize"})
    row = db.session.scalar(select(MailboxOAuth).where(MailboxOAuth.mailbox_id == oauth_box.id))
    # Expired, so that fetching must refresh it at a token endpoint that does not answer.
    oauth_svc.store_grant(row, keys, access_token=SECRETS["access token"], refresh_token=SECRETS["refresh token"],
                          access_expires_at=utcnow() - timedelta(minutes=5), account="oauth@alpha.example")
    changed = microsoft_app.save_microsoft_app(owner.msp, {
        "client_id": "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b", "credential": "secret",
        "client_secret": SECRETS["app secret"], "secret_expires": None}, keys=keys, actor=owner.admin)
    assert changed["client_secret"] == [None, "(set)"]
    commit()
    owner.password_box, owner.oauth_box = box, oauth_box
    return owner


def found_in(haystack: str | bytes) -> list[str]:
    if isinstance(haystack, bytes):
        return [name for name, value in SECRETS.items() if value.encode() in haystack]
    return [name for name, value in SECRETS.items() if value in haystack]


def test_secrets_appear_in_no_page_log_row_redis_value_or_export(app, installation, make_browser, redis, caplog):
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    caplog.set_level(logging.DEBUG)
    # Use them, and fail: each failure is logged and recorded.
    for box in (installation.password_box, installation.oauth_box):
        check_connection(box, keys=keys, actor=installation.admin)
        run_fetch(box, open_session=open_session, keys=keys, secret=b"s", commit=commit)
    commit()

    assert "could not be reached" in caplog.text  # the token endpoint was tried with the refresh token
    leaks, pages = [], 0
    admin = signed_in(make_browser, installation.admin.email)
    for req in sweep(app, installation):
        if req.method != "GET" or "sign-out" in req.url:
            continue
        admin._fresh_request()
        resp = admin.client.get(req.url)
        if resp.mimetype == "text/event-stream":  # a live stream never ends; it carries ticket parts only
            resp.close()
            continue
        body = resp.get_data()
        pages += 1
        leaks += [f"page {req.url}: {name}" for name in found_in(body)]
    assert pages > 40
    leaks += [f"log: {name}" for name in found_in(caplog.text)]

    for table in db.Model.metadata.sorted_tables:
        for row in db.session.execute(text(f"SELECT * FROM {table.name}")):
            for value in row:
                if isinstance(value, (str, bytes, memoryview)):
                    value = bytes(value) if isinstance(value, memoryview) else value
                    leaks += [f"table {table.name}: {name}" for name in found_in(value)]

    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        values = {"string": lambda: [redis.get(key)], "hash": lambda: list(redis.hgetall(key).values()),
                  "list": lambda: redis.lrange(key, 0, -1), "set": lambda: list(redis.smembers(key)),
                  "zset": lambda: redis.zrange(key, 0, -1)}.get(kind, lambda: [])()
        for value in values:
            try:
                value = zlib.decompress(value)  # RQ keeps job data compressed
            except (zlib.error, TypeError):
                pass
            leaks += [f"redis {key.decode()}: {name}" for name in found_in(value or b"")]

    import yaml  # noqa: PLC0415 - only here, to write the file as `flask config export` does

    plain = yaml.safe_dump(config_io.export_config(keys=keys))
    leaks += [f"export: {name}" for name in found_in(plain)]
    assert leaks == []

    with_secrets = yaml.safe_dump(config_io.export_config(keys=keys, with_secrets=True))
    assert set(found_in(with_secrets)) >= {"mailbox password", "outgoing password", "gateway password",
                                           "client secret", "app secret"}


def test_the_search_finds_a_secret_where_one_is(installation):
    # The scan above would see a secret in clear: here one is written where it must not be.
    assert found_in(f"token={SECRETS['refresh token']}") == ["refresh token"]
    assert found_in(SECRETS["app secret"].encode()) == ["app secret"]
    assert inspect(MailboxOAuth).columns["refresh_token_encrypted"] is not None
