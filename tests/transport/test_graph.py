"""portal.transport.graph against the local Graph server: paging, the token's only destination,
Retry-After, the per-mailbox gate of 4, sizes, and tokens from the local OAuth2 server."""

import ipaddress
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests

from portal.transport.base import TransportError
from portal.transport.graph import GraphSession, GraphSettings, retry_after
from portal.transport.reach import Reach, RefusedServer
from tests.mailfactory import email

BOX = "helpdesk@contoso.com"


@pytest.fixture
def graph(graph_server):
    graph_server.tokens.add("t0k3n")
    graph_server.add_mailbox(BOX)
    return graph_server


def settings(graph_server, **kw):
    return GraphSettings(**{"api_url": graph_server.api_url, "mailbox": BOX, "token": "t0k3n", **kw})


def test_delta_follows_next_links_with_the_page_size_asked_for(graph):
    ids = [graph.deliver(BOX, email(subject=f"n{i}")) for i in range(20)]
    with GraphSession(settings(graph)) as session:
        pages = list(session.delta("INBOX", page_size=7))
    assert [len(p.ids) for p in pages] == [7, 7, 6]
    assert [p.delta_link is not None for p in pages] == [False, False, True]
    assert [i for p in pages for i in p.ids] == ids
    graph.folder(BOX)[0].is_read = True  # changed by someone else: no change number, not seen again
    new = graph.deliver(BOX, email(subject="later"))
    with GraphSession(settings(graph)) as session:
        again = list(session.delta("inbox", pages[-1].delta_link))
    assert [p.ids for p in again] == [[new]]


def test_a_link_to_another_server_is_never_followed_with_the_token(graph):
    before = len(graph.requests)
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as refused:
            list(session.delta("inbox", "https://graph.attacker.example/v1.0/users/x/messages/delta?$deltatoken=1"))
    assert "sent a link to another server (graph.attacker.example); it was not followed" in refused.value.message
    assert len(graph.requests) == before


def test_plain_http_only_to_this_machine_and_the_address_rule_before_the_token_leaves(graph):
    with pytest.raises(ValueError, match="not an https URL"):
        GraphSettings(api_url="http://graph.example/v1.0", mailbox=BOX, token="t")
    with GraphSession(settings(graph, reach=Reach(restricted=True))) as session:
        with pytest.raises(RefusedServer, match="loopback"):
            session.inbox()
    assert graph.requests == []


def test_with_the_address_rule_every_request_goes_to_the_checked_address(graph):
    """The name is resolved by the rule, and the connection goes where it said: here "localhost"
    is made to resolve to 127.0.0.2, where nothing listens (the server is on 127.0.0.1), so a
    second lookup by the system would have connected, and the pinned one cannot."""
    looked_up = []

    def resolver(address):
        def resolve(host, port, type=0):
            looked_up.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return resolve
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    url = graph.api_url.replace("127.0.0.1", "localhost")
    pinned = Reach(restricted=True, allowed=loopback, resolve=resolver("127.0.0.1"))
    with GraphSession(settings(graph, api_url=url, reach=pinned)) as session:
        assert session.inbox()["displayName"] == "Inbox"
        session.inbox()
    assert looked_up == ["localhost", "localhost"]  # by the rule, once a request
    elsewhere = Reach(restricted=True, allowed=loopback, resolve=resolver("127.0.0.2"))
    with GraphSession(settings(graph, api_url=url, reach=elsewhere)) as session:
        with pytest.raises(TransportError) as refused:
            session.inbox()
    assert refused.value.message == "could not reach Microsoft Graph at localhost: Connection refused"


def test_retry_after_in_seconds_as_a_date_or_missing():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert retry_after("7", 1) == 7.0
    assert 25 < retry_after(later, 1) <= 30
    assert [retry_after(None, n) for n in (1, 2, 3, 6)] == [2.0, 4.0, 8.0, 30.0]


def test_throttling_waits_as_told_within_the_bound(graph):
    graph.deliver(BOX, email())
    slept = []
    graph.fail_next(503)  # no Retry-After: a short backoff
    graph.fail_next(429, retry_after=5)
    with GraphSession(settings(graph), sleep=slept.append) as session:
        assert session.inbox()["totalItemCount"] == 1
    assert slept == [2.0, 5.0]
    graph.fail_next(429, retry_after=50, times=3)
    with GraphSession(settings(graph, max_wait=60), sleep=slept.append) as session:
        with pytest.raises(TransportError) as busy:
            session.inbox()
    assert busy.value.transient and busy.value.kind == "connect"
    assert "waited 50 seconds, the next poll goes on" in busy.value.message


def test_two_sessions_of_one_mailbox_share_the_gate_of_four(graph):
    ids = [graph.deliver(BOX, email(subject=f"n{i}")) for i in range(24)]
    graph.delay = 0.03
    results = []

    def download(part):
        with GraphSession(settings(graph)) as session:
            results.append(session.fetch(part, 10_000_000))
    threads = [threading.Thread(target=download, args=(ids[n::2],)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(f.server_id for r in results for f in r) == sorted(ids)
    assert graph.max_in_flight == 4


def test_a_message_gone_meanwhile_is_left_out_and_an_oversized_one_kept_as_a_record(graph):
    small = graph.deliver(BOX, email(body="short"))
    big = graph.deliver(BOX, email(body="x" * 50_000))
    with GraphSession(settings(graph)) as session:
        fetched = session.fetch([small, "AAMkGoneMeanwhile", big], 20_000)
    assert [(f.server_id, f.raw is None) for f in fetched] == [(small, False), (big, True)]
    assert fetched[0].raw == graph.folder(BOX)[0].raw and fetched[1].size == 20_001


def test_a_token_from_the_oauth_server_is_accepted_until_revoked(graph, oauth_server):
    oauth_server.register_client("graph-app", "app-secret", grant_types=("client_credentials",), app_username=BOX)
    token = requests.post(f"{oauth_server.url}/token", data={"grant_type": "client_credentials"},
                          auth=("graph-app", "app-secret"), timeout=10).json()["access_token"]
    graph.introspection_url = oauth_server.introspection_url
    with GraphSession(settings(graph, token=token)) as session:
        assert session.inbox()["displayName"] == "Inbox"
    oauth_server.revoke_grant(token)
    started = time.monotonic()
    with GraphSession(settings(graph, token=token)) as session:
        with pytest.raises(TransportError) as refused:
            session.inbox()
    assert time.monotonic() - started < 5 and not refused.value.transient
    assert refused.value.message.startswith(f"Microsoft Graph refused the access token for {BOX} "
                                            "(InvalidAuthenticationToken: ")
    assert token not in refused.value.message


def test_send_as_another_address_refused_is_told_apart_from_a_missing_permission(graph):
    graph.fail_next(403, path="/sendMail", code="ErrorSendAsDenied")
    message = email(sender="help@acme.example", to=("alice@contoso.com",))
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as refused:
            session.send_mime(message)
    assert refused.value.message.startswith(f"Microsoft Graph refused to send from {BOX} as another address "
                                            "(ErrorSendAsDenied: ")
    assert not refused.value.transient and graph.sent == []
    with GraphSession(settings(graph)) as session:
        session.send_mime(message)
    assert graph.sent == [(BOX, message)]
