"""A Graph mailbox without an SMTP server of its own sends through sendMail, with the MIME we
compose (the threading headers survive), as the mailbox itself: a shared mailbox's copy lands in
its own Sent Items. The local Graph server (tests/graph_server.py) stands in for Microsoft."""

from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message
from portal.oauth import providers
from portal.services import commit
from portal.services import mailbox_oauth as oauth_svc
from portal.services.ticket_replies import reply
from tests.inbound.test_fetch_graph import ADDRESS, TOKEN, email, graph_mailbox, requests_to
from workers.sending import send_due


@pytest.fixture
def contoso(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return msp


@pytest.fixture
def sender(app, redis):
    app.config["TIDEMARK_JOBS_SYNC"] = False  # each test runs the sender by hand
    app.config["TIDEMARK_MAIL_HOST"] = "tidemark.test"


def outbox():
    db.session.expire_all()
    return list(db.session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)))


def received(graph_server, index=-1):
    user, raw = graph_server.sent[index]
    return user, message_from_bytes(raw, policy=policy.default)


def test_acknowledgement_and_reply_go_out_through_sendmail_threaded(app, world, contoso, graph_server, sender):
    mailbox = graph_mailbox(app, world, contoso, graph_server, acknowledge=True)
    first = world.deliver(mailbox, email(sender="Alice <alice@contoso.com>", subject="Printer on fire",
                                         message_id="<c1@contoso.com>"))
    assert send_due() == {"sent": 1}
    user, ack = received(graph_server)
    assert user == ADDRESS and ack["From"].addresses[0].addr_spec == ADDRESS
    assert ack["In-Reply-To"] == "<c1@contoso.com>" and "<c1@contoso.com>" in ack["References"]
    assert ack["Message-ID"] == outbox()[0].message_id and ack["Message-ID"].endswith("@tidemark.test>")
    assert [str(m["Message-ID"]) for m in (message_from_bytes(x.raw) for x in graph_server.folder(ADDRESS, "sentitems"))] \
        == [ack["Message-ID"]]

    technician = world.user(db.session.get(type(contoso), contoso.id), email="tom@acme.example", role="technician")
    reply(first.ticket, technician, to="alice@contoso.com", cc="", text="Unplug it, please.")
    commit()
    assert send_due() == {"sent": 1}
    _user, answer = received(graph_server)
    assert answer["In-Reply-To"] and answer["In-Reply-To"] in answer["References"]
    assert "<c1@contoso.com>" in answer["References"]
    assert answer["Message-ID"] == outbox()[1].message_id
    assert "Unplug it, please." in answer.get_body(("plain",)).get_content()
    assert [m.delivery for m in outbox()] == ["sent", "sent"]


def test_a_shared_mailbox_sends_as_itself_and_keeps_the_copy(app, world, contoso, graph_server, sender):
    shared = "support@contoso.com"
    # Connected as the delegate helpdesk@ (the grant's account), opening the shared mailbox.
    mailbox = graph_mailbox(app, world, contoso, graph_server, address=shared, shared=shared, acknowledge=True)
    mailbox.oauth.account = ADDRESS
    commit()
    graph_server.add_mailbox(ADDRESS)  # the delegate's own mailbox must stay untouched
    world.deliver(mailbox, email(sender="alice@contoso.com", to=(shared,)))
    assert send_due() == {"sent": 1}
    user, ack = received(graph_server)
    assert user == shared and ack["From"].addresses[0].addr_spec == shared
    assert len(graph_server.folder(shared, "sentitems")) == 1
    assert graph_server.folder(ADDRESS, "sentitems") == []


def test_a_refused_token_fails_the_mail_and_throttling_retries_it(app, world, contoso, graph_server, sender):
    mailbox = graph_mailbox(app, world, contoso, graph_server, acknowledge=True)
    world.deliver(mailbox, email(sender="alice@contoso.com", subject="one"))
    graph_server.fail_next(429, retry_after=3600, path="/sendMail")
    asked = datetime.now(timezone.utc)
    assert send_due() == {"retrying": 1}  # at once: the sender does not sit out Graph's hour
    throttled = outbox()[0]
    assert throttled.delivery_note.startswith("retrying in 60 min (try 1): Microsoft Graph is busy for helpdesk@")
    assert datetime.fromisoformat(throttled.details["next_attempt"]) >= asked + timedelta(hours=1)
    assert graph_server.sent == [] and len(requests_to(graph_server, "/sendMail")) == 1

    world.deliver(mailbox, email(sender="bob@contoso.com", subject="two"))
    graph_server.refuse(TOKEN)
    assert send_due() == {"retrying": 1}
    note = outbox()[1].delivery_note
    assert note.startswith("retrying in 1 min (try 1): Microsoft Graph refused the access token for helpdesk@")
    assert "InvalidAuthenticationToken" in note and TOKEN not in note
    db.session.refresh(mailbox.oauth)
    assert mailbox.oauth.access_token_encrypted is None  # the next try asks for a new one


def test_a_token_request_that_failed_is_not_made_again_for_the_mailboxs_other_mail(
        app, world, contoso, graph_server, oauth_server, sender, monkeypatch):
    monkeypatch.setattr(providers, "MICROSOFT_LOGIN", oauth_server.url)
    oauth_server.register_client("app-1", "s3cret", grant_types=("client_credentials",), app_username=ADDRESS)
    mailbox = graph_mailbox(app, world, contoso, graph_server, token=None, acknowledge=True)
    for who in ("alice", "bob", "carol"):
        world.deliver(mailbox, email(sender=f"{who}@contoso.com", subject=f"from {who}"))
    oauth_server.fail_next({"error": "temporarily_unavailable"}, 503)  # the next request only
    assert send_due() == {"retrying": 3}
    assert len(oauth_server.token_requests) == 1  # once for the run, not once a message
    assert len({m.delivery_note for m in outbox()}) == 1 and graph_server.requests == []


def test_a_grant_that_gives_no_token_fails_the_mail_in_the_providers_words(app, world, contoso, graph_server, sender):
    mailbox = graph_mailbox(app, world, contoso, graph_server, acknowledge=True)
    oauth_svc.reconnect_needed(mailbox.oauth, "AADSTS7000222: The provided client secret keys are expired.")
    commit()
    world.deliver(mailbox, email(sender="alice@contoso.com"))
    assert send_due() == {"failed": 1}
    assert outbox()[0].delivery_note == (
        "failed: helpdesk@contoso.com needs reconnecting: its OAuth2 grant was refused (AADSTS7000222: The "
        "provided client secret keys are expired.). Reconnect it on the mailbox page.")
    assert graph_server.requests == []


def test_sendmail_waits_for_the_hand_over_and_a_failed_one_sends_nothing(app, world, contoso, graph_server, sender):
    """The sending run records a message as being handed over before the request that may send it
    (workers.sending.record_handing_over); when it cannot, the request is never made."""
    from portal.outbound.deliver import deliver
    from portal.outbound.servers import send_environment

    mailbox = graph_mailbox(app, world, contoso, graph_server, acknowledge=True)
    world.deliver(mailbox, email(sender="alice@contoso.com", subject="Printer"))
    seen = []

    def handing_over(message):
        seen.append(len(requests_to(graph_server, "/sendMail")))
        raise RuntimeError("the database could not be reached")

    with pytest.raises(RuntimeError):
        deliver(outbox()[0], send_environment(), handing_over=handing_over)
    assert seen == [0] and requests_to(graph_server, "/sendMail") == [] and graph_server.sent == []
    db.session.rollback()
    assert send_due() == {"sent": 1} and len(graph_server.sent) == 1
    assert outbox()[0].delivery == "sent"


class Killed(BaseException):
    """What a kill -9 leaves: nothing of the run goes on after that point (tests.soak.faults does it
    with a real worker and SIGKILL)."""


def graph_mail_being_handed_over(app, world, contoso, graph_server, monkeypatch, *, dies):
    """A run that dies while Graph takes an acknowledgement: `dies` "after sendMail", or "before
    sendMail" (recorded as being handed over, the request never made)."""
    import workers.sending as sending
    from portal import faults

    mailbox = graph_mailbox(app, world, contoso, graph_server, acknowledge=True)
    world.deliver(mailbox, email(sender="alice@contoso.com", subject="Printer"))
    recorded = sending.record_handing_over

    def die_after_sendmail(step):
        if step == "after-send":
            raise Killed

    def die_before_sendmail(message):
        recorded(message)
        raise Killed

    with monkeypatch.context() as patch:
        if dies == "after sendMail":
            patch.setattr(faults, "reached", die_after_sendmail)
        else:
            patch.setattr(sending, "record_handing_over", die_before_sendmail)
        with pytest.raises(Killed):
            send_due()
    db.session.rollback()
    assert [m.delivery for m in outbox()] == ["sending"]
    return outbox()[0]


def test_a_run_that_died_after_sendmail_finds_the_mail_in_sent_items_and_does_not_send_it_again(
        app, world, contoso, graph_server, sender, monkeypatch):
    from portal.models import AutoMailLog
    from portal.outbound.deliver import FOUND_SENT_NOTE
    from tests.inbound.test_fetch_graph import count

    ack = graph_mail_being_handed_over(app, world, contoso, graph_server, monkeypatch, dies="after sendMail")
    assert len(graph_server.sent) == 1
    assert send_due() == {"found sent": 1}
    assert len(graph_server.sent) == 1  # not sent again
    assert len(requests_to(graph_server, "/mailFolders/sentitems/messages")) == 1
    settled = outbox()[0]
    assert (settled.delivery, settled.delivery_note) == ("sent", FOUND_SENT_NOTE)
    assert received(graph_server)[1]["Message-ID"] == ack.message_id
    assert count(AutoMailLog) == 1  # counted for the loop guard as any sent acknowledgement
    assert send_due() == {} and len(graph_server.sent) == 1


def test_a_run_that_died_before_sendmail_leaves_the_mail_uncertain_and_unsent(
        app, world, contoso, graph_server, sender, monkeypatch):
    graph_mail_being_handed_over(app, world, contoso, graph_server, monkeypatch, dies="before sendMail")
    assert graph_server.sent == []
    assert send_due() == {"uncertain": 1}
    assert graph_server.sent == [] and outbox()[0].delivery == "uncertain"
    assert outbox()[0].delivery_note.startswith("may have been sent")


def test_mail_whose_sent_items_cannot_be_read_now_is_uncertain(app, world, contoso, graph_server, sender, monkeypatch):
    graph_mail_being_handed_over(app, world, contoso, graph_server, monkeypatch, dies="after sendMail")
    graph_server.fail_next(503, retry_after=30, path="/mailFolders/sentitems/messages")
    assert send_due() == {"uncertain": 1}  # the single sender does not wait on one busy mailbox
    assert len(graph_server.sent) == 1 and outbox()[0].delivery == "uncertain"
