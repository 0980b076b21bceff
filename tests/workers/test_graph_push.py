"""Microsoft Graph change notifications (portal.inbound.graph_push, portal.graph_notifications,
workers.graph_push) against the local Graph server, which calls a live portal back.

The portal runs on a loopback port in a thread, over TLS with a self-signed certificate for
127.0.0.1 (tests.certificates), so that its TIDEMARK_PORTAL_URL is a real https address: the
product has no switch that lets Graph push to plain http. The local Graph server checks that
certificate as Graph checks a public one, does the validation handshake, and posts the
notifications when mail is delivered."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
import requests
from rq import Queue, SimpleWorker
from sqlalchemy import select
from werkzeug.serving import make_server

from portal import crypto
from portal.extensions import db
from portal.inbound.graph_push import LIFETIME, NO_PUBLIC_ADDRESS
from portal.inbound.health import due_mailboxes, fetch_lock
from portal.models import GraphSubscription, Mailbox, Ticket
from portal.models.base import utcnow
from portal.services import commit
from portal.services.mailboxes import check_connection, delete_mailbox, set_status
from tests.certificates import loopback_server_files
from tests.inbound.test_fetch_graph import ADDRESS, email, graph_mailbox
from workers.graph_push import keep_graph_subscriptions, keep_mailbox_subscriptions


@pytest.fixture
def https_portal(app, tmp_path, graph_server):
    """The app served over https on loopback; its address is the portal's, and the Graph server trusts it."""
    cert, key = loopback_server_files(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(cert, key))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_port}"
    app.config["TIDEMARK_PORTAL_URL"] = url
    graph_server.notification_ca = cert
    yield url
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def contoso(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.user(msp, email="ana@acme.example", role="admin")
    return msp


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def rows(mailbox_id):
    db.session.expire_all()
    return list(db.session.scalars(select(GraphSubscription).where(GraphSubscription.mailbox_id == mailbox_id)))


def subscribed(app, world, msp, graph_server, **values):
    """An active Graph mailbox with its subscription made by the job that keeps them."""
    mailbox = graph_mailbox(app, world, msp, graph_server, **values)
    keep_mailbox_subscriptions(mailbox.id)
    (row,) = rows(mailbox.id)
    assert row.subscription_id in graph_server.subscriptions, row.problem
    return mailbox, row


def queued(app, redis) -> list:
    return list(Queue(app.config["TIDEMARK_QUEUE"], connection=redis).jobs)


def run_worker(app, redis) -> None:
    SimpleWorker([Queue(app.config["TIDEMARK_QUEUE"], connection=redis)], connection=redis).work(burst=True)


def subscription_requests(graph_server):
    return [(m, p) for m, p, _q in graph_server.requests if p.startswith("/v1.0/subscriptions")]


# --- the endpoint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/graph/notifications", "/graph/lifecycle"])
def test_the_validation_handshake_answers_the_token_as_plain_text(app, https_portal, graph_server, path):
    token = "Validation: Testing client application reachability <b>for</b> subscription Request-Id: 1f2e"
    answer = requests.post(https_portal + path, params={"validationToken": token}, verify=graph_server.notification_ca,
                           headers={"Content-Type": "text/plain"}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain") and answer.text == token
    # No session, no CSRF token: Graph has neither; a body with nothing known is 202 and nothing more.
    nothing = requests.post(https_portal + path, json={"value": [{"subscriptionId": "unknown", "clientState": "x"}]},
                            verify=graph_server.notification_ca, timeout=10)
    assert (nothing.status_code, nothing.text) == (202, "")


def test_a_body_larger_than_graph_sends_is_refused_unread(app, https_portal, graph_server, redis):
    too_large = requests.post(https_portal + "/graph/notifications", data=b"{" + b" " * 300_000 + b"}",
                              verify=graph_server.notification_ca, timeout=10)
    assert too_large.status_code == 413
    garbage = requests.post(https_portal + "/graph/notifications", data=b"not json",
                            verify=graph_server.notification_ca, timeout=10)
    assert garbage.status_code == 202 and queued(app, redis) == []


# --- subscribing ----------------------------------------------------------------------------------------


def test_a_graph_mailbox_made_active_subscribes_after_graphs_handshake(app, world, contoso, graph_server,
                                                                       https_portal, redis):
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    mailbox.status = "draft"
    commit()
    assert rows(mailbox.id) == []
    assert check_connection(mailbox, keys(app)).ok
    set_status(mailbox, "active", keys=keys(app), actor=None)
    commit()  # the job that keeps its subscriptions runs after the commit (inline in tests)

    (row,) = rows(mailbox.id)
    sub = graph_server.subscriptions[row.subscription_id]
    assert sub.resource == f"users/{ADDRESS}/mailFolders('inbox')/messages"
    assert sub.notification_url == https_portal + "/graph/notifications"
    assert sub.lifecycle_url == https_portal + "/graph/lifecycle"
    # Graph checked both addresses before it answered.
    assert graph_server.handshakes == [(sub.notification_url, 200), (sub.lifecycle_url, 200)]
    # The clientState is a random secret, kept encrypted; Graph got the same one.
    assert len(sub.client_state) >= 40 and sub.client_state.encode() not in bytes(row.client_state_encrypted)
    assert crypto.decrypt(keys(app), row.client_state_encrypted) == sub.client_state
    lifetime = row.expires_at - utcnow()
    assert LIFETIME - timedelta(minutes=5) < lifetime <= LIFETIME <= timedelta(minutes=4230)
    assert row.expires_at == sub.expires.replace(microsecond=row.expires_at.microsecond)

    # Kept again while nothing is due: nothing is asked of Graph.
    graph_server.requests.clear()
    keep_graph_subscriptions()
    assert subscription_requests(graph_server) == []


def test_a_portal_that_graph_cannot_check_gets_no_subscription(app, world, contoso, graph_server, https_portal,
                                                               browser):
    graph_server.notification_ca = str(__file__)  # not the portal's certificate: the handshake fails
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    keep_mailbox_subscriptions(mailbox.id)
    (row,) = rows(mailbox.id)
    assert row.subscription_id is None and graph_server.subscriptions == {}
    assert "Subscription validation request failed" in row.problem
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{mailbox.id}").get_data(as_text=True)
    assert "polling: Microsoft Graph did not subscribe: Microsoft Graph refused a request for helpdesk@contoso.com: " \
           "HTTP 400 (ValidationError: Subscription validation request failed." in page


def test_without_an_https_portal_address_graph_mailboxes_are_polled_and_told_why(app, world, contoso, graph_server,
                                                                                  browser):
    app.config["TIDEMARK_PORTAL_URL"] = "http://tickets.example.com"
    mailbox = graph_mailbox(app, world, contoso, graph_server)
    keep_graph_subscriptions()
    assert rows(mailbox.id) == [] and subscription_requests(graph_server) == []
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{mailbox.id}").get_data(as_text=True)
    assert f"polling: {NO_PUBLIC_ADDRESS}" in page
    mailbox.next_poll_at = utcnow()
    commit()
    assert mailbox in due_mailboxes(utcnow())


# --- notifications ------------------------------------------------------------------------------------


def test_delivered_mail_asks_for_the_scheduled_fetch_and_becomes_a_ticket_through_a_worker(
        app, world, contoso, graph_server, https_portal, redis, browser):
    mailbox, _row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_JOBS_SYNC"] = False
    graph_server.deliver(ADDRESS, email(subject="Printer on fire", sender="kim@contoso.com"))
    graph_server.deliver(ADDRESS, email(subject="Scanner too", sender="kim@contoso.com"))
    assert [status for _url, _body, status in graph_server.notifications] == [202, 202]
    # The same job (and job id) the scheduler queues, once for both notifications.
    (job,) = queued(app, redis)
    assert (job.id, job.func_name, job.args) == (fetch_lock(mailbox.id), "workers.fetch.fetch_mailbox", (mailbox.id,))
    run_worker(app, redis)
    db.session.expire_all()
    assert sorted(t.subject for t in db.session.scalars(select(Ticket))) == ["Printer on fire", "Scanner too"]
    assert all(m.is_read for m in graph_server.folder(ADDRESS))

    # Pushed: the scheduler polls it only at its safety interval, and its page says until when.
    db.session.refresh(mailbox)
    mailbox.next_poll_at = utcnow()
    commit()
    assert mailbox not in due_mailboxes(utcnow())
    mailbox.last_poll_at = utcnow() - timedelta(minutes=15, seconds=1)
    commit()
    assert mailbox in due_mailboxes(utcnow())
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{mailbox.id}").get_data(as_text=True)
    assert "push (Graph notifications until " in page
    assert "push (Graph notifications until " in browser.get("/mailboxes").get_data(as_text=True)


def test_a_notification_content_is_never_used(app, world, contoso, graph_server, https_portal, redis):
    """A notification naming a message that is not there (or another mailbox's) only asks for
    this mailbox's fetch, which reads its own delta and finds nothing new."""
    _mailbox, row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_JOBS_SYNC"] = False
    assert graph_server.notify(row.subscription_id, mid="AAMkNotThere") == 202
    run_worker(app, redis)
    db.session.expire_all()
    assert db.session.scalars(select(Ticket)).all() == []
    assert not any("AAMkNotThere" in path for _m, path, _q in graph_server.requests)


def test_a_wrong_client_state_is_refused_and_logged_without_secrets(app, world, contoso, graph_server, https_portal,
                                                                    redis, caplog):
    caplog.set_level(logging.DEBUG)
    mailbox, row = subscribed(app, world, contoso, graph_server)
    secret = graph_server.subscriptions[row.subscription_id].client_state
    forged = secret[:-4] + "AAAA"
    assert graph_server.notify(row.subscription_id, client_state=forged) == 202
    assert graph_server.lifecycle(row.subscription_id, "missed", client_state="") == 202
    assert queued(app, redis) == []
    refusals = [r.getMessage() for r in caplog.records if "clientState does not match" in r.getMessage()]
    assert len(refusals) == 2 and f"mailbox {mailbox.id}" in refusals[0]
    assert secret not in caplog.text and forged not in caplog.text


def test_the_fetch_asked_for_while_one_runs_is_asked_again_when_it_ends(app, world, contoso, graph_server,
                                                                        https_portal, redis):
    from portal.jobs import exclusive
    from rq.job import JobStatus
    from workers.fetch import enqueue_due_fetches

    mailbox, _row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_JOBS_SYNC"] = False
    graph_server.deliver(ADDRESS, email(subject="first"))
    (job,) = queued(app, redis)
    job.set_status(JobStatus.STARTED)  # a worker has it: it may have read its delta already
    with exclusive(fetch_lock(mailbox.id)):
        graph_server.deliver(ADDRESS, email(subject="second"))
        enqueue_due_fetches()
        assert redis.smembers("tidemark:push:fetch-again") == {str(mailbox.id).encode()}
    job.delete()  # that fetch ended
    enqueue_due_fetches()
    assert [j.id for j in queued(app, redis)] == [fetch_lock(mailbox.id)]
    assert redis.smembers("tidemark:push:fetch-again") == set()


# --- renewal and lifecycle ---------------------------------------------------------------------------------


def test_a_subscription_close_to_expiry_is_renewed_by_the_scheduled_job(app, world, contoso, graph_server,
                                                                       https_portal):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    row.expires_at = utcnow() + timedelta(hours=2)
    graph_server.subscriptions[row.subscription_id].expires = row.expires_at
    commit()
    graph_server.requests.clear()
    assert keep_graph_subscriptions() == 1
    (renewed,) = rows(mailbox.id)
    assert renewed.subscription_id == row.subscription_id
    assert renewed.expires_at - utcnow() > LIFETIME - timedelta(minutes=5)
    assert graph_server.subscriptions[row.subscription_id].expires > utcnow() + timedelta(days=2)
    assert subscription_requests(graph_server) == [("PATCH", f"/v1.0/subscriptions/{row.subscription_id}")]


def test_a_subscription_graph_forgot_is_made_again_at_renewal(app, world, contoso, graph_server, https_portal):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    old = row.subscription_id
    del graph_server.subscriptions[old]
    row.expires_at = utcnow() + timedelta(hours=2)
    commit()
    keep_graph_subscriptions()
    (again,) = rows(mailbox.id)
    assert again.subscription_id != old and again.subscription_id in graph_server.subscriptions


def test_reauthorization_required_is_answered_with_a_reauthorization(app, world, contoso, graph_server,
                                                                     https_portal, redis):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    assert graph_server.lifecycle(row.subscription_id, "reauthorizationRequired") == 202
    assert [j.func_name for j in queued(app, redis)] == ["workers.graph_push.keep_mailbox_subscriptions"]
    graph_server.requests.clear()
    run_worker(app, redis)
    sub = graph_server.subscriptions[row.subscription_id]
    assert not sub.needs_reauthorization
    assert ("POST", f"/v1.0/subscriptions/{row.subscription_id}/reauthorize") in subscription_requests(graph_server)
    assert rows(mailbox.id)[0].subscription_id == row.subscription_id


def test_missed_notifications_ask_for_a_fetch_now(app, world, contoso, graph_server, https_portal, redis):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_JOBS_SYNC"] = False
    with graph_server.lock:  # mail Graph did not tell us of
        graph_server.subscriptions[row.subscription_id].expires = utcnow() - timedelta(seconds=1)
        graph_server.deliver(ADDRESS, email(subject="Missed one"))
        graph_server.subscriptions[row.subscription_id].expires = row.expires_at
    assert graph_server.notifications == []
    assert graph_server.lifecycle(row.subscription_id, "missed") == 202
    assert fetch_lock(mailbox.id) in [j.id for j in queued(app, redis)]
    run_worker(app, redis)
    db.session.expire_all()
    assert [t.subject for t in db.session.scalars(select(Ticket))] == ["Missed one"]


def test_a_removed_subscription_is_made_again_and_the_mailbox_fetched(app, world, contoso, graph_server,
                                                                       https_portal, redis):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_JOBS_SYNC"] = False
    old = row.subscription_id
    assert graph_server.lifecycle(old, "subscriptionRemoved") == 202
    assert old not in graph_server.subscriptions
    assert sorted(j.func_name for j in queued(app, redis)) == ["workers.fetch.fetch_mailbox",
                                                               "workers.graph_push.keep_mailbox_subscriptions"]
    run_worker(app, redis)
    (again,) = rows(mailbox.id)
    assert again.subscription_id != old and list(graph_server.subscriptions) == [again.subscription_id]
    graph_server.deliver(ADDRESS, email(subject="After the removal"))
    assert graph_server.notifications[-1][2] == 202
    assert fetch_lock(mailbox.id) in [j.id for j in queued(app, redis)]


# --- when a mailbox stops reading ----------------------------------------------------------------------------


def test_disabling_the_mailbox_deletes_its_subscription(app, world, contoso, graph_server, https_portal):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    set_status(mailbox, "disabled", keys=keys(app), actor=None)
    commit()
    assert rows(mailbox.id) == [] and graph_server.subscriptions == {}
    assert ("DELETE", f"/v1.0/subscriptions/{row.subscription_id}") in subscription_requests(graph_server)


def test_another_protocol_or_no_https_address_deletes_the_subscriptions(app, world, contoso, graph_server,
                                                                          https_portal):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    app.config["TIDEMARK_PORTAL_URL"] = "http://127.0.0.1:5000"
    keep_graph_subscriptions()
    assert rows(mailbox.id) == [] and graph_server.subscriptions == {}
    app.config["TIDEMARK_PORTAL_URL"] = https_portal  # the address appears again: subscribed again
    keep_graph_subscriptions()
    (row,) = rows(mailbox.id)
    assert list(graph_server.subscriptions) == [row.subscription_id]
    db.session.get(Mailbox, mailbox.id).protocol = "imap"
    commit()
    keep_graph_subscriptions()
    assert rows(mailbox.id) == [] and graph_server.subscriptions == {}


def test_deleting_the_mailbox_deletes_its_subscription(app, world, contoso, graph_server, https_portal):
    mailbox, _row = subscribed(app, world, contoso, graph_server)
    delete_mailbox(mailbox, actor=None)
    commit()
    assert graph_server.subscriptions == {}
    assert db.session.scalars(select(GraphSubscription)).all() == []


# --- tenancy and secrets ----------------------------------------------------------------------------------------


def test_another_msp_sees_nothing_and_the_client_state_is_shown_nowhere(app, world, contoso, graph_server,
                                                                         https_portal, redis, make_browser, caplog):
    caplog.set_level(logging.DEBUG)
    mailbox, row = subscribed(app, world, contoso, graph_server)
    secret = graph_server.subscriptions[row.subscription_id].client_state
    graph_server.deliver(ADDRESS, email(subject="Printer on fire"))
    other = world.msp("Other MSP")
    world.user(other, email="olga@other.example", role="admin")
    olga = make_browser()
    olga.sign_in("olga@other.example")
    assert olga.get(f"/mailboxes/{mailbox.id}").status_code == 404
    listing = olga.get("/mailboxes").get_data(as_text=True)
    assert ADDRESS not in listing and "Graph notifications" not in listing

    ana = make_browser()
    ana.sign_in("ana@acme.example")
    urls = (f"/mailboxes/{mailbox.id}", "/mailboxes", f"/mailboxes/{mailbox.id}/history",
            f"/mailboxes/{mailbox.id}/edit")
    pages = [ana.get(url).get_data(as_text=True) for url in urls]
    assert "push (Graph notifications until " in pages[0]
    assert not any(secret in page or row.subscription_id in page for page in pages)
    assert secret not in caplog.text
    values = [v for key in redis.scan_iter() if redis.type(key) == b"string" for v in [redis.get(key)]]
    assert not any(secret.encode() in (v or b"") for v in values)


def test_the_readme_paragraph_says_what_the_code_does():
    """The README's paragraph on Graph notifications: its figures and addresses are the code's.
    Its other sentences are held by the tests above: the https address (no subscription without
    it), the handshake, clientState refused and logged without the secret, one fetch per mailbox
    (none during a cool-off) and the content never used, renewal, each lifecycle event, deletion,
    the 15-minute safety poll and the page's words."""
    from pathlib import Path

    from portal.inbound.graph_push import LIFECYCLE_PATH, NOTIFICATION_PATH, RENEW_BEFORE
    from portal.inbound.health import SAFETY_POLL_SECONDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("When `TIDEMARK_PORTAL_URL` is an `https://` address")
    paragraph = " ".join(readme[start:readme.index("\n\n", start)].split())
    assert f"at `{NOTIFICATION_PATH}`" in paragraph and f"at `{LIFECYCLE_PATH}`" in paragraph
    assert f"asked for {int(LIFETIME.total_seconds() // 60)} minutes" in paragraph
    assert RENEW_BEFORE == timedelta(days=1) and "a day before it expires" in paragraph
    assert f"every {SAFETY_POLL_SECONDS // 60} minutes" in paragraph
    assert 'says "push (Graph notifications until …)"' in paragraph


def test_every_folder_read_gets_its_own_subscription_and_push_needs_them_all(app, world, contoso, graph_server,
                                                                            https_portal, browser):
    graph_server.add_mailbox(ADDRESS)
    support = graph_server.add_folder(ADDRESS, "Support")
    mailbox = graph_mailbox(app, world, contoso, graph_server, folders=["inbox", "Support"])
    keep_mailbox_subscriptions(mailbox.id)
    found = {row.folder: graph_server.subscriptions[row.subscription_id].resource for row in rows(mailbox.id)}
    assert found == {"inbox": f"users/{ADDRESS}/mailFolders('inbox')/messages",
                     "Support": f"users/{ADDRESS}/mailFolders('{support}')/messages"}
    mailbox.next_poll_at = mailbox.last_poll_at = utcnow()  # its poll is due, its safety poll not
    commit()
    assert mailbox not in due_mailboxes(utcnow())
    # One folder's subscription gone (expired, unrenewed): polled at its own interval again, and told why.
    support_row = next(r for r in rows(mailbox.id) if r.folder == "Support")
    support_row.expires_at = utcnow() - timedelta(seconds=1)
    commit()
    assert mailbox in due_mailboxes(utcnow())
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{mailbox.id}").get_data(as_text=True)
    assert "polling: subscribing to Graph notifications" in page
    keep_graph_subscriptions()  # an expired one is made again
    assert all(r.expires_at > utcnow() + timedelta(days=2) for r in rows(mailbox.id))
    assert mailbox not in due_mailboxes(utcnow())


def test_the_client_states_are_rotated_with_the_other_secrets(app, world, contoso, graph_server, https_portal,
                                                              rotate_keys, redis):
    _mailbox, row = subscribed(app, world, contoso, graph_server)
    secret = graph_server.subscriptions[row.subscription_id].client_state
    new_key, _output = rotate_keys()
    (rotated,) = rows(row.mailbox_id)
    assert crypto.decrypt(new_key, rotated.client_state_encrypted) == secret
    app.config["TIDEMARK_ENCRYPTION_KEY"] = new_key  # the old key dropped: notifications still check
    assert graph_server.notify(row.subscription_id) == 202
    assert [j.func_name for j in queued(app, redis)] == ["workers.fetch.fetch_mailbox"]


def test_a_notification_does_not_cut_a_cool_off_short(app, world, contoso, graph_server, https_portal, redis):
    mailbox, row = subscribed(app, world, contoso, graph_server)
    mailbox.streak_alerted, mailbox.failure_count = True, 3
    mailbox.next_poll_at = utcnow() + timedelta(minutes=10)
    commit()
    assert graph_server.notify(row.subscription_id) == 202
    assert queued(app, redis) == []
    mailbox.next_poll_at = utcnow() - timedelta(seconds=1)  # the cool-off is over
    commit()
    assert graph_server.notify(row.subscription_id) == 202
    assert [j.id for j in queued(app, redis)] == [fetch_lock(mailbox.id)]
