"""Fetching a Microsoft Graph mailbox (protocol graph) from the local Graph server: delta pages,
each message once, marked read or moved only after the commit, the delta link stored last,
throttling waited out, never more than 4 requests at once, refusals in plain words."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select

from portal.extensions import db
from portal.inbound import fetch_graph as fetch_graph_module
from portal.inbound.fetch import run_fetch
from portal.models import FolderState, Mailbox, RawMessage, Ticket
from portal.oauth import providers
from portal.services import commit
from portal.services import mailbox_oauth as oauth_svc
from portal.transport import open_session
from tests.mailfactory import email as _email
from workers.fetch import fetch_mailbox

ADDRESS = "helpdesk@contoso.com"
TOKEN = "graph-access-token-1"


@pytest.fixture
def contoso(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return msp


def graph_mailbox(app, world, msp, graph_server, token=TOKEN, address=ADDRESS, shared=None, **values):
    """An active Graph mailbox connected with `token` (stored with a far-away expiry), known to the server."""
    values.setdefault("acknowledge", False)
    mailbox = world.mailbox(msp, address=address, protocol="graph", auth="oauth2", host="", username="",
                            password=None, api_url=graph_server.api_url, shared_mailbox=shared,
                            oauth={"provider": "microsoft", "flow": "app", "tenant": "contoso.onmicrosoft.com",
                                   "client_id": "app-1", "client_secret": "s3cret"}, **values)
    if token:
        oauth_svc.store_grant(mailbox.oauth, app.config["TIDEMARK_ENCRYPTION_KEY"], access_token=token,
                              access_expires_at=datetime.now(timezone.utc) + timedelta(days=3650))
        graph_server.tokens.add(token)
    mailbox.status = "active"
    commit()
    graph_server.add_mailbox(shared or address)
    return mailbox


def email(**kw):
    kw.setdefault("to", (ADDRESS,))
    return _email(**kw)


def fetch(app, mailbox, **kw):
    cfg = app.config
    return run_fetch(mailbox, open_session=open_session, keys=cfg["TIDEMARK_ENCRYPTION_KEY"],
                     secret=cfg["SECRET_KEY"].encode(), commit=commit, host=cfg["TIDEMARK_MAIL_HOST"], **kw)


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def requests_to(graph_server, ending):
    return [r for r in graph_server.requests if r[1].endswith(ending)]


def delta_link_of(mailbox):
    db.session.expire_all()
    return db.session.scalar(select(FolderState.delta_link).where(FolderState.mailbox_id == mailbox.id))


def test_first_fetch_over_several_delta_pages_then_only_what_is_new(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    for i in range(250):
        graph_server.deliver(ADDRESS, email(subject=f"case {i}"))
    report = fetch(app, mailbox)
    assert report.error is None
    assert (report.fetched, report.outcomes) == (250, {"created": 250})
    assert count(RawMessage) == 250 and count(Ticket) == 250
    assert len({s for s in db.session.scalars(select(RawMessage.server_id))}) == 250
    deltas = requests_to(graph_server, "/messages/delta")
    assert len(deltas) == 3  # 100 + 100 + 50, following @odata.nextLink
    assert all(m.is_read for m in graph_server.folder(ADDRESS))
    assert "$deltatoken=" in delta_link_of(mailbox)

    graph_server.requests.clear()
    for i in range(3):
        graph_server.deliver(ADDRESS, email(subject=f"later {i}"))
    again = fetch(app, mailbox)
    assert (again.fetched, again.outcomes, again.error) == (3, {"created": 3}, None)
    assert len(requests_to(graph_server, "/$value")) == 3  # the 250 marked read came back as changed, known
    assert "$deltatoken" in requests_to(graph_server, "/messages/delta")[0][2]
    assert count(Ticket) == 253 and count(RawMessage) == 253


class Crash(BaseException):
    """The worker dies here (not an error the fetch handles)."""


@pytest.mark.parametrize("told", [False, True])
def test_a_crash_after_storing_and_before_the_delta_link_doubles_nothing(app, world, contoso, graph_server,
                                                                         monkeypatch, told):
    """told False: the crash comes before the server is told (nothing may be marked read yet: the
    bytes are committed first); True: after, but before the delta link is stored."""
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    for i in range(30):
        graph_server.deliver(ADDRESS, email(subject=f"case {i}"))
    real = fetch_graph_module.finish_graph_actions

    def crashing(mailbox, session, folder, commit):
        waiting = count(RawMessage, RawMessage.server_done.is_(False))
        if told:
            real(mailbox, session, folder, commit)
        if waiting:
            raise Crash()
    monkeypatch.setattr(fetch_graph_module, "finish_graph_actions", crashing)
    with pytest.raises(Crash):
        fetch(app, mailbox)
    db.session.rollback()
    assert count(RawMessage) == 30  # committed before the crash
    assert delta_link_of(mailbox) is None
    assert [m.is_read for m in graph_server.folder(ADDRESS)] == [told] * 30

    monkeypatch.setattr(fetch_graph_module, "finish_graph_actions", real)
    report = fetch(app, mailbox)
    assert report.error is None and report.fetched == 0
    assert count(RawMessage) == 30 and count(Ticket) == 30
    assert all(m.is_read for m in graph_server.folder(ADDRESS))
    assert delta_link_of(mailbox) is not None
    assert count(RawMessage, RawMessage.server_done.is_(False)) == 0


def test_processed_mail_is_moved_to_a_folder_named_by_its_display_name(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server, after_action="move", processed_folder="Processed")
    graph_server.add_folder(ADDRESS, "Processed")
    for i in range(5):
        graph_server.deliver(ADDRESS, email(subject=f"case {i}"))
    assert fetch(app, mailbox).fetched == 5
    assert graph_server.folder(ADDRESS) == []
    assert sorted(m.raw for m in graph_server.folder(ADDRESS, "Processed")) == sorted(
        db.session.scalars(select(RawMessage.raw)))
    # The next round hears of five removals and fetches nothing.
    again = fetch(app, mailbox)
    assert (again.fetched, again.error, count(Ticket)) == (0, None, 5)


def test_a_moved_message_to_a_missing_folder_fails_in_plain_words(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server, after_action="move", processed_folder="Nowhere")
    graph_server.deliver(ADDRESS, email())
    report = fetch(app, mailbox)
    assert "there is no folder named 'Nowhere' in helpdesk@contoso.com" in report.error
    assert count(RawMessage) == 1 and count(Ticket) == 1  # stored and decided all the same


def test_throttling_is_waited_out_as_retry_after_says(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    for i in range(12):
        graph_server.deliver(ADDRESS, email(subject=f"case {i}"))
    graph_server.fail_next(429, retry_after=1, times=2, path="/$value")
    graph_server.fail_next(503, retry_after=1, path="/messages/delta")
    started = time.monotonic()
    report = fetch(app, mailbox)
    assert report.error is None and report.fetched == 12 and count(Ticket) == 12
    assert time.monotonic() - started >= 2  # the delta and the downloads each waited a second
    assert graph_server.failures == []


def test_throttling_longer_than_the_bounded_wait_is_a_transient_failure(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    graph_server.deliver(ADDRESS, email())
    graph_server.fail_next(429, retry_after=3600, path="/messages/delta")
    started = time.monotonic()
    report = fetch(app, mailbox)
    assert time.monotonic() - started < 5  # not an hour
    assert "Microsoft Graph is busy for helpdesk@contoso.com (HTTP 429 TooManyRequests" in report.error
    db.session.refresh(mailbox)
    assert mailbox.failure_count == 1 and "to try again later (next wait: 3600 s)" in mailbox.last_error
    assert fetch(app, mailbox).fetched == 1


def test_never_more_than_four_requests_at_once(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    for i in range(40):
        graph_server.deliver(ADDRESS, email(subject=f"case {i}"))
    graph_server.delay = 0.03
    assert fetch(app, mailbox).fetched == 40
    assert 2 <= graph_server.max_in_flight <= 4


@pytest.mark.parametrize("refusal, words", [
    ("token", "Microsoft Graph refused the access token for helpdesk@contoso.com (InvalidAuthenticationToken"),
    ("denied", "the app has no permission to the mailbox helpdesk@contoso.com (ErrorAccessDenied"),
    ("missing", "the mailbox helpdesk@contoso.com was not found at Microsoft Graph (ErrorInvalidUser"),
])
def test_refusals_are_a_plain_words_failure_on_the_mailbox(app, world, contoso, graph_server, refusal, words):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    graph_server.deliver(ADDRESS, email())
    if refusal == "token":
        graph_server.refuse(TOKEN)
    elif refusal == "denied":
        graph_server.deny(ADDRESS)
    else:
        graph_server.mailboxes.clear()
    report = fetch(app, mailbox)
    assert words in report.error and TOKEN not in report.error
    db.session.refresh(mailbox)
    assert words in mailbox.last_error and mailbox.failure_count == 1
    assert count(RawMessage) == 0
    # A refused token is not offered again: the next poll asks the sign-in service for a new one.
    assert (mailbox.oauth.access_token_encrypted is None) == (refusal == "token")


def test_a_shared_mailbox_is_read_through_its_own_address(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server, shared="support@contoso.com")
    graph_server.deliver("support@contoso.com", email(to=("support@contoso.com",)))
    assert fetch(app, mailbox).fetched == 1
    assert all("/users/support@contoso.com/" in r[1] for r in graph_server.requests)


def test_a_forgotten_delta_link_reads_the_folder_again_without_doubles(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    graph_server.deliver(ADDRESS, email(subject="first"))
    assert fetch(app, mailbox).fetched == 1
    graph_server.expire_delta_links()
    graph_server.deliver(ADDRESS, email(subject="second"))
    report = fetch(app, mailbox)
    assert (report.fetched, report.error, count(RawMessage)) == (1, None, 2)
    assert "$deltatoken=" in delta_link_of(mailbox)


def test_a_refused_grant_is_told_to_reconnect_and_graph_hears_nothing(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    oauth_svc.reconnect_needed(mailbox.oauth, "AADSTS700082: The refresh token has expired.")
    commit()
    report = fetch(app, db.session.get(Mailbox, mailbox.id))
    assert "helpdesk@contoso.com needs reconnecting" in report.error and "AADSTS700082" in report.error
    assert graph_server.requests == []


def test_an_app_only_mailbox_fetches_with_a_token_from_client_credentials(app, world, contoso, graph_server,
                                                                          oauth_server, monkeypatch):
    """End to end: the token comes from the local authorisation server (standing in for Entra ID:
    same paths), Graph accepts it through that server's introspection."""
    monkeypatch.setattr(providers, "MICROSOFT_LOGIN", oauth_server.url)
    oauth_server.register_client("app-1", "s3cret", grant_types=("client_credentials",), app_username=ADDRESS)
    graph_server.introspection_url = oauth_server.introspection_url
    mailbox = graph_mailbox(app, world, contoso, graph_server, token=None)
    graph_server.deliver(ADDRESS, email())
    report = fetch(app, mailbox)
    assert (report.fetched, report.error, count(Ticket)) == (1, None, 1)
    asked = oauth_server.token_requests
    assert [(f["grant_type"], f["scope"]) for f in asked] == [("client_credentials", "https://graph.microsoft.com/.default")]
    assert graph_server.tokens == set()  # accepted as the authorisation server's, not from a list
    assert fetch(app, mailbox).error is None and len(oauth_server.token_requests) == 1  # the stored token serves again
    # Revoked before it expires: Graph refuses it once, and the next poll asks for a new one.
    oauth_server.revoke_grant(next(iter(oauth_server.by_access)))
    graph_server.deliver(ADDRESS, email(subject="after"))
    assert "(InvalidAuthenticationToken: " in fetch(app, mailbox).error
    again = fetch(app, mailbox)
    assert (again.error, again.fetched, len(oauth_server.token_requests)) == (None, 1, 2)


def test_each_folder_reads_its_state_row_once_a_fetch(app, world, contoso, graph_server):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    graph_server.deliver(ADDRESS, email(subject="first"))
    assert fetch(app, mailbox).fetched == 1
    graph_server.deliver(ADDRESS, email(subject="second"))
    reads = []

    def seen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT") and "FROM folder_states" in statement:
            reads.append(statement)
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert fetch(app, mailbox).fetched == 1  # the stored delta link was used: only the new one
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert len(reads) == 1


def test_a_delta_link_of_another_api_url_is_not_followed(app, world, contoso, graph_server, redis):
    """Through the fetch job: after the API URL changed, the old link (and the token) stay home."""
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    graph_server.deliver(ADDRESS, email(subject="first"))
    assert fetch_mailbox(mailbox.id)["fetched"] == 1
    db.session.execute(FolderState.__table__.update().values(
        delta_link="https://graph.old.example/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken=1"))
    commit()
    graph_server.deliver(ADDRESS, email(subject="second"))
    report = fetch_mailbox(mailbox.id)
    assert (report["fetched"], report["error"], count(RawMessage)) == (1, None, 2)
    assert delta_link_of(mailbox).startswith(graph_server.api_url)
