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

from portal.transport import graph as graph_module
from portal.transport.base import TransportError
from portal.transport.graph import MAX_TRIES, GraphSession, GraphSettings, Throttled, retry_after
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


def test_a_delta_round_that_would_not_end_is_stopped_and_says_so(graph, monkeypatch, caplog):
    graph.endless_delta = "same"
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as looped:
            list(session.delta("inbox"))
    assert len(graph.requests) == 2  # the first page, and its next link once
    assert looped.value.message.startswith(f"Microsoft Graph's delta round for inbox in {BOX} sent a next link it "
                                           "had sent before (after 2 pages): stopped")
    monkeypatch.setattr(graph_module, "MAX_PAGES", 5)
    graph.endless_delta, graph.requests = "new", []
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as endless:
            list(session.delta("inbox"))
    assert len(graph.requests) == 5
    assert "went on for more than 5 pages: stopped" in endless.value.message
    assert "more than 5 pages in one round; round stopped" in caplog.text


def test_a_link_to_another_server_is_never_followed_with_the_token(graph):
    before = len(graph.requests)
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as refused:
            list(session.delta("inbox", "https://graph.attacker.example/v1.0/users/x/messages/delta?$deltatoken=1"))
    assert "sent a link to another server (graph.attacker.example); it was not followed" in refused.value.message
    assert len(graph.requests) == before


def test_plain_http_only_to_this_machine_and_the_address_rule_before_the_token_leaves(graph):
    with pytest.raises(ValueError, match="must use https"):
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
        session.fetch(["AAMkOne", "AAMkTwo", "AAMkThree"], 1000)  # from several threads at once
    assert looked_up == ["localhost"]  # by the rule, once for the session's requests
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
    past = format_datetime(datetime.now(timezone.utc) - timedelta(hours=1), usegmt=True)
    assert retry_after("0", 1) == retry_after(past, 1) == 1.0  # never "ask again at once"


@pytest.mark.parametrize("told", [0, "Mon, 01 Jan 2001 00:00:00 GMT"])
def test_a_retry_after_of_nothing_waits_a_second_and_gives_up_after_a_few_tries(graph, told):
    graph.fail_next(429, retry_after=told, times=MAX_TRIES + 3)
    slept = []
    with GraphSession(settings(graph), sleep=slept.append) as session:
        with pytest.raises(Throttled) as busy:
            session.inbox()
    assert slept == [1.0] * (MAX_TRIES - 1) and len(graph.requests) == MAX_TRIES
    assert busy.value.transient and busy.value.retry_after == 1.0
    assert busy.value.message == (f"Microsoft Graph is busy for {BOX} (HTTP 429 TooManyRequests: Application is over "
                                  f"its MailboxConcurrency limit.); gave up after {MAX_TRIES} tries and 4 seconds of "
                                  "waiting, to try again later (next wait: 1 s)")


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
    assert "gave up after 2 tries and 50 seconds of waiting" in busy.value.message


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
    assert 2 <= graph.max_in_flight <= 4  # the gate bounds it; how many overlap is up to the scheduler


def test_a_message_gone_meanwhile_is_left_out_and_an_oversized_one_kept_as_a_record(graph):
    small = graph.deliver(BOX, email(body="short"))
    big = graph.deliver(BOX, email(body="x" * 50_000))
    with GraphSession(settings(graph)) as session:
        fetched = session.fetch([small, "AAMkGoneMeanwhile", big], 20_000)
    assert [(f.server_id, f.raw is None) for f in fetched] == [(small, False), (big, True)]
    assert fetched[0].raw == graph.folder(BOX)[0].raw and fetched[1].size == 20_001


def test_an_answer_over_the_limit_is_refused_in_plain_words_while_a_message_has_its_own(graph, monkeypatch):
    ids = [graph.deliver(BOX, email(subject=f"n{i}", body="y" * 3000)) for i in range(20)]
    monkeypatch.setattr(graph_module, "MAX_ANSWER", 2000)  # a delta page of 20 ids is more
    with GraphSession(settings(graph)) as session:
        with pytest.raises(TransportError) as big:
            list(session.delta("inbox", page_size=20))
        fetched = session.fetch(ids[:1], 10_000)  # $value: the message size limit, not MAX_ANSWER
    assert big.value.message == f"Microsoft Graph's answer for {BOX} is larger than 2000 bytes: it was not read"
    assert not big.value.transient
    assert fetched[0].raw == graph.folder(BOX)[0].raw and len(fetched[0].raw) > 2000


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


def test_sent_items_is_asked_for_one_message_id_quoted_as_odata_wants(graph):
    sent = email(sender=BOX, to=("alice@contoso.com",), message_id="<o'brien.1@tidemark.test>")
    other = email(sender=BOX, to=("bob@contoso.com",), message_id="<other@tidemark.test>")
    graph.deliver(BOX, other, folder="inbox")  # the Inbox is not where sendMail keeps its copy
    assert not graph_module.in_sent_items(settings(graph), "<other@tidemark.test>")
    with GraphSession(settings(graph)) as session:
        session.send_mime(sent)
    assert graph_module.in_sent_items(settings(graph), "<o'brien.1@tidemark.test>")
    assert not graph_module.in_sent_items(settings(graph), "<o'brien.2@tidemark.test>")
    method, path, query = graph.requests[-1]
    assert (method, path) == ("GET", f"/v1.0/users/{BOX}/mailFolders/sentitems/messages")
    assert query["$filter"] == "internetMessageId eq '<o''brien.2@tidemark.test>'"
