"""Admin-typed OAuth URLs held to the address rule (transport.reach) through a pinned requests
session: refused before anything is sent, or sent to the checked address while TLS verifies the
typed name."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from portal import oauth
from portal.oauth import AppCredentials, OAuthError
from portal.transport.reach import Reach, pin
from tests.dovecot import _make_tls

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
REFUSED = "cannot be used as a server here: it is an address of this machine itself (loopback)"


def resolving_to(address: str, asked: list | None = None):
    """A resolver that answers `address` for every name (and notes the names asked)."""
    def resolve(host, port, type=0):
        if asked is not None:
            asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
    return resolve


def app_of(oauth_server):
    oauth_server.register_client("app", "app-secret", grant_types=["client_credentials"])
    return AppCredentials("app", "app-secret")


def test_a_token_url_on_loopback_is_refused_and_nothing_is_sent(oauth_server):
    provider = oauth.generic(f"{oauth_server.url}/token")
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(provider, app_of(oauth_server), ["mail"], reach=Reach(restricted=True))
    assert str(caught.value) == f"127.0.0.1 {REFUSED}. If this server is meant to be reached, ask the operator of " \
                                "this installation to allow its network."
    assert caught.value.kind == "config" and oauth_server.token_requests == []


def test_a_name_that_resolves_to_loopback_is_refused_too(oauth_server):
    asked = []
    provider = oauth.generic("https://login.tokens.example/token")
    reach = Reach(restricted=True, resolve=resolving_to("127.0.0.1", asked))
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, AppCredentials("app", "app-secret"), "rt-1", ["mail"], reach=reach)
    assert str(caught.value).startswith(f"login.tokens.example {REFUSED}")
    assert asked == ["login.tokens.example"] and oauth_server.token_requests == []


def test_one_msp_reaches_the_local_server_as_typed(oauth_server):
    grant = oauth.client_credentials(oauth.generic(f"{oauth_server.url}/token"), app_of(oauth_server), ["mail"],
                                     reach=Reach(restricted=False))
    assert grant.access_token and oauth_server.token_requests[-1]["grant_type"] == "client_credentials"


def test_an_allowed_network_is_reached_at_the_checked_address(oauth_server):
    asked = []
    reach = Reach(restricted=True, allowed=LOOPBACK, resolve=resolving_to("127.0.0.1", asked))
    grant = oauth.client_credentials(oauth.generic(f"{oauth_server.url}/token"), app_of(oauth_server), ["mail"],
                                     reach=reach)
    assert grant.access_token and asked == ["127.0.0.1"]


def test_a_name_that_does_not_resolve_reads_in_plain_words():
    def nowhere(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(oauth.generic("https://nowhere.example/token"), AppCredentials("a", "b"), "rt",
                      reach=Reach(restricted=True, resolve=nowhere))
    assert str(caught.value) == ("could not reach the OAuth server's sign-in service at nowhere.example: its host "
                                 "name does not resolve (Name or service not known)")
    assert caught.value.temporary


class _Seen(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.hosts.append(self.headers.get("Host"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(tmp_path, monkeypatch):
    """An https server on 127.0.0.1 with the test CA's certificate (for localhost and 127.0.0.1),
    trusted through SSL_CERT_FILE."""
    ca_file, cert, key = _make_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Seen)
    httpd.hosts = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_tls_verifies_the_typed_name_while_the_socket_goes_to_the_checked_address(https_server):
    port = https_server.server_port
    reach = Reach(restricted=True, allowed=LOOPBACK, resolve=resolving_to("127.0.0.1"))
    with pin(requests.Session(), reach) as session:
        answer = session.get(f"https://localhost:{port}/x", timeout=5, verify=ssl.get_default_verify_paths().cafile)
    assert answer.status_code == 204 and https_server.hosts == [f"localhost:{port}"]
    # Another name pinned to the same address: the certificate does not carry it, nothing is sent.
    with pin(requests.Session(), reach) as session, pytest.raises(requests.exceptions.SSLError):
        session.get(f"https://mail.other.example:{port}/x", timeout=5,
                    verify=ssl.get_default_verify_paths().cafile)
    assert https_server.hosts == [f"localhost:{port}"]


def test_the_next_checked_address_is_tried_when_the_first_refuses(oauth_server):
    """The server listens on 127.0.0.1 only: 127.0.0.2 refuses the connection, nothing was sent."""
    def two(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    reach = Reach(restricted=True, allowed=LOOPBACK, resolve=two)
    grant = oauth.client_credentials(oauth.generic(f"{oauth_server.url}/token"), app_of(oauth_server), ["mail"],
                                     reach=reach)
    assert grant.access_token and len(oauth_server.token_requests) == 1
