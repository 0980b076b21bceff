"""What portal.oauth keeps on top of Authlib's requests client (portal/oauth/http.py), tested on loopback."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from portal import oauth
from portal.oauth import AppCredentials, OAuthError
from portal.transport.urls import MAX_ANSWER
from tests.dovecot import _make_tls

ODD_SECRET = "pa%41ss:w+rd/~1"  # '%41' would decode to 'A' if sent unencoded; ':' splits Basic; '+' a space


@pytest.fixture
def server(oauth_server):
    oauth_server.register_client("odd-app", ODD_SECRET, grant_types=["client_credentials"],
                                 app_username="helpdesk@contoso.example")
    return oauth_server


@pytest.mark.parametrize("kind", ["generic", "microsoft"])
def test_a_secret_with_reserved_characters_is_accepted_in_basic_and_in_the_form(server, kind):
    # generic: HTTP Basic, each half form-encoded (RFC 6749 2.3.1); microsoft: in the form.
    provider = (oauth.generic(f"{server.url}/token", scopes=["mail"]) if kind == "generic"
                else oauth.microsoft("contoso.example", base_url=server.url))
    grant = oauth.client_credentials(provider, AppCredentials("odd-app", ODD_SECRET), ["mail"])
    assert server.introspect(grant.access_token)["active"] is True
    sent = server.token_requests[-1]
    assert ("client_secret" in sent) == (kind == "microsoft")


def test_an_answer_without_a_usable_lifetime_lasts_the_default_hour(server):
    server.fail_next({"access_token": "at-1", "token_type": "Bearer", "expires_in": "soon"}, status=200)
    grant = oauth.client_credentials(oauth.generic(f"{server.url}/token"), AppCredentials("odd-app", ODD_SECRET),
                                     ["mail"])
    assert grant.access_token == "at-1"
    assert timedelta(minutes=59) < grant.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    server.fail_next({"token_type": "Bearer"}, status=200)
    with pytest.raises(OAuthError, match="no access token") as caught:
        oauth.client_credentials(oauth.generic(f"{server.url}/token"), AppCredentials("odd-app", ODD_SECRET), ["m"])
    assert caught.value.kind == "server"


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST with `answer` (status, headers); records what reached it."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, body, self.headers.get("Authorization")))
        status, headers = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    found = []
    for _ in range(2):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        httpd.seen, httpd.answer = [], (204, {})
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        found.append(httpd)
    yield found
    for httpd in found:
        httpd.shutdown()
        httpd.server_close()


def test_a_redirecting_token_endpoint_is_not_followed(recorder):
    first, elsewhere = recorder
    first.answer = (307, {"Location": f"http://127.0.0.1:{elsewhere.server_port}/steal"})
    provider = oauth.generic(f"http://127.0.0.1:{first.server_port}/token")
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(provider, AppCredentials("app", "the-secret"), ["mail"])
    assert caught.value.code == "HTTP 307" and "without an OAuth answer" in str(caught.value)
    assert len(first.seen) == 1 and elsewhere.seen == []
    assert "the-secret" not in str(caught.value)


def test_revocation_answered_with_an_empty_200_counts(recorder):
    server = recorder[0]
    server.answer = (200, {})
    provider = oauth.generic(f"http://127.0.0.1:{server.server_port}/token",
                             revocation_url=f"http://127.0.0.1:{server.server_port}/revoke")
    assert oauth.revoke(provider, AppCredentials("app", "the-secret"), "rt-1") is True
    path, body, authorization = server.seen[-1]
    assert path == "/revoke" and b"token=rt-1" in body and b"token_type_hint=refresh_token" in body
    assert authorization.startswith("Basic ") and b"the-secret" not in body


def test_an_answer_larger_than_the_limit_is_not_read_whole(server):
    server.fail_next({"access_token": "at-1", "token_type": "Bearer", "padding": "x" * (MAX_ANSWER + 1)}, status=200)
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(oauth.generic(f"{server.url}/token"), AppCredentials("odd-app", ODD_SECRET), ["m"])
    assert str(caught.value) == "the OAuth server's sign-in service at 127.0.0.1 answered with more than 4 MiB: " \
                                "it was not read"
    assert caught.value.kind == "server"
    grant = oauth.client_credentials(oauth.generic(f"{server.url}/token"), AppCredentials("odd-app", ODD_SECRET),
                                     ["m"])  # an answer within the limit, read through the same stream
    assert server.introspect(grant.access_token)["active"] is True


def test_network_failures_read_in_plain_words():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(oauth.generic(f"http://127.0.0.1:{port}/token"), AppCredentials("a", "b"), ["m"],
                                 timeout=2)
    assert str(caught.value) == "could not reach the OAuth server's sign-in service at 127.0.0.1: Connection refused"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        provider = oauth.generic(f"http://127.0.0.1:{listener.getsockname()[1]}/token")
        with pytest.raises(OAuthError) as caught:
            oauth.client_credentials(provider, AppCredentials("a", "b"), ["m"], timeout=0.5)
    assert str(caught.value).endswith(": no answer within 0.5 seconds") and caught.value.temporary


def test_tls_is_checked_against_the_systems_trust_store(tmp_path, monkeypatch):
    ca_file, cert, key = _make_tls(tmp_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.seen, httpd.answer = [], (204, {})
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    provider = oauth.generic(f"https://127.0.0.1:{httpd.server_port}/token",
                             revocation_url=f"https://127.0.0.1:{httpd.server_port}/revoke")
    try:
        # The system does not trust the test CA: nothing is sent.
        with pytest.raises(OAuthError) as caught:
            oauth.revoke(provider, AppCredentials("app", "the-secret"), "rt-1", timeout=5)
        assert caught.value.kind == "network" and "TLS connection failed" in str(caught.value)
        assert httpd.seen == []
        # Trusted through SSL_CERT_FILE (as the standard library honours it), not through requests' own variable.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
        assert oauth.revoke(provider, AppCredentials("app", "the-secret"), "rt-1", timeout=5) is True
        assert httpd.seen[-1][0] == "/revoke"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_generic_provider_is_held_to_the_one_url_rule_when_made():
    with pytest.raises(OAuthError, match="must use https: tokens and secrets travel through it"):
        oauth.generic("http://login.example.net/token")
    with pytest.raises(OAuthError, match="is not a URL like https://"):
        oauth.generic("https://login.example.net/token", authorize_url="ftp://login.example.net/authorize")
    assert oauth.generic("http://127.0.0.1:8080/token").token_url == "http://127.0.0.1:8080/token"
