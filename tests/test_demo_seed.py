"""`flask demo seed`: the demo MSP, its mailbox and the sample emails run through the real
pipeline once, and what the README's first-run paragraph says a newcomer finds."""

import re
from pathlib import Path

from sqlalchemy import func, select

from portal.inbound.context import IngestContext
from portal.inbound.decide import AUTOMATIC_NO_TICKET, AUTOMATIC_RECORDED
from portal.inbound.fetch import ingest_given
from portal.models import AuditEntry, Contact, Mailbox, Message, RawMessage, Ticket
from portal.services import commit
from portal.services.demo import DEMO_ADMIN, DEMO_MAILBOX, DEMO_PASSWORD, sample_files
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def seed(app):
    result = app.test_cli_runner().invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    return result.output


def samples(db) -> dict[str, Message]:
    """The first copy of each sample, by file name (a raw row's server id starts with it)."""
    rows = db.session.scalars(select(Message).join(RawMessage).where(Message.duplicate_of_id.is_(None))
                              .order_by(Message.id)).all()
    return {m.raw_message.server_id.split(":")[0]: m for m in rows}


def ticket(db, reference) -> Ticket:
    return db.session.scalar(select(Ticket).where(Ticket.reference == reference))


def counts(db) -> dict:
    return {
        "tickets": db.session.scalar(select(func.count(Ticket.id))),
        "on tickets": db.session.scalar(select(func.count(Message.id)).where(Message.ticket_id.is_not(None))),
        "unprocessed": db.session.scalar(select(func.count(Message.id)).where(Message.outcome == "unprocessed")),
        "contacts": db.session.scalar(select(func.count(Contact.id))),
        "history": db.session.scalar(select(func.count(AuditEntry.id))),
        "mailboxes": db.session.scalar(select(func.count(Mailbox.id))),
    }


def test_each_sample_goes_where_the_pipeline_puts_it(app, db):
    output = seed(app)
    mail = samples(db)
    assert sorted(mail) == [p.name for p in sample_files()] and len(mail) == 7
    assert all(m.trace for m in mail.values())

    # A new request, the reply that quotes it, and a later email naming only [T-1]: one ticket.
    t1 = ticket(db, "T-1")
    assert t1.client.name == "Contoso" and t1.contact.email == "alice.moreau@contoso.example.com"
    assert [m.id for m in t1.messages if m.direction == "in"] == [
        mail[n].id for n in ("01-new-request.eml", "02-reply-with-quote.eml", "07-reference-only.eml")]
    request, reply, by_reference = (mail[n] for n in ("01-new-request.eml", "02-reply-with-quote.eml",
                                                      "07-reference-only.eml"))
    assert request.outcome == "created" and "Finance needs" in request.body_text
    assert "Office manager" not in request.body_text  # cut at Contoso's waterline, "Best regards"
    assert reply.outcome == "appended" and "One more detail" in reply.body_text
    assert "> Since this morning" not in reply.body_text  # the quote is cut away
    assert "thread: In-Reply-To matched <20261130091512.4821.alice@mail.contoso.example.com> on T-1" in reply.trace
    assert by_reference.outcome == "appended" and not by_reference.in_reply_to
    assert "thread: subject reference T-1 on T-1" in by_reference.trace

    # The out-of-office answers no ticket: recorded, waiting, and noted in the mailbox's history.
    ooo = mail["03-out-of-office.eml"]
    assert ooo.outcome == "unprocessed" and ooo.ticket_id is None and ooo.details["automatic_no_ticket"]
    assert ooo.trace[-1] == f"unprocessed: {AUTOMATIC_NO_TICKET}"
    noted = db.session.scalar(select(AuditEntry).where(AuditEntry.action == AUTOMATIC_RECORDED))
    assert noted.record_id == ooo.mailbox_id and "carol.nakamura@fabrikam.example.net" in str(noted.changes)

    # The bounce: its failed recipient read from the report, a Fabrikam ticket, no acknowledgement.
    bounce = mail["04-bounce.eml"]
    assert bounce.details["bounce"] and bounce.details["bounced_recipients"] == ["frank.osei@fabrikam.example.net"]
    assert bounce.ticket.reference == "T-2" and bounce.ticket.client.name == "Fabrikam"
    assert "bounce for frank.osei@fabrikam.example.net" in bounce.trace
    assert bounce.trace[-1].endswith("no acknowledgement: the mail is auto-generated")

    # The newsletter: HTML with its inline image, filed under the MSP by the fallback route.
    news = mail["05-newsletter.eml"]
    assert news.ticket.reference == "T-3" and news.ticket.client.name == "Demo MSP"
    assert "route: fallback route 'Everything else' → Demo MSP" in news.trace
    assert "Three updates worth scheduling" in news.body_html
    [banner] = news.attachments
    assert banner.inline and banner.content_type == "image/png" and banner.data.startswith(b"\x89PNG")
    assert f"cid:{banner.content_id.strip('<>')}" in news.body_html

    # The stranger's mail reached an alias no route names: it waits for a person.
    stranger = mail["06-stranger.eml"]
    assert stranger.outcome == "unprocessed" and stranger.ticket_id is None
    assert stranger.trace[-1] == "unprocessed: sent to hello@demo.example, an alias no route names"

    # Nothing was written to send: the demo mailbox acknowledges nothing.
    assert db.session.scalar(select(func.count(Message.id)).where(Message.direction == "out")) == 0
    for line in ("01-new-request.eml: created T-1", "02-reply-with-quote.eml: appended T-1",
                 "03-out-of-office.eml: unprocessed", "06-stranger.eml: unprocessed"):
        assert line in output


def test_a_second_seed_hands_no_sample_over_again_and_changes_nothing(app, db):
    seed(app)
    before = counts(db), db.session.scalar(select(func.count(RawMessage.id)))
    output = seed(app)
    assert (counts(db), db.session.scalar(select(func.count(RawMessage.id)))) == before
    assert output.count(": already seeded") == 7 and "Found the demo MSP" in output


def test_a_sample_seeded_twice_under_another_name_is_a_duplicate_of_its_first_copy(app, db):
    """The pipeline's own duplicate check stands behind the seed's: the same bytes again create nothing."""
    seed(app)
    first = samples(db)
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == DEMO_MAILBOX))
    before = counts(db)
    _stored, result = ingest_given(IngestContext(box, b"k" * 32, None), sample_files()[0].read_bytes(),
                                   server_id="copy.eml", folder="demo")
    commit()
    assert counts(db) == before
    assert result.outcome == "duplicate" and result.message.duplicate_of_id == first["01-new-request.eml"].id


def test_no_acknowledgement_leaves_even_with_a_gateway_set(app, db, smtp_gateway):
    seed(app)
    assert app.config["TIDEMARK_JOBS_SYNC"]  # anything queued would have been sent by now
    assert smtp_gateway.messages == []
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == DEMO_MAILBOX))
    # A draft without a server: nothing fetches it.
    assert box.status == "draft" and box.host == "" and not box.acknowledge and box.next_poll_at is None


def test_what_the_readme_says_a_newcomer_finds(app, db, browser):
    """Signed in as the demo admin: the tickets, the conversation, the waiting mail to teach,
    the trace, and the steps to a real mailbox the README lists."""
    seed(app)
    first_run = README.split("### What the demo shows", 1)[1].split("## Screenshots", 1)[0]
    assert browser.sign_in(DEMO_ADMIN, DEMO_PASSWORD).status_code == 302
    page = browser.get("/tickets/T-1").get_data(as_text=True)
    for text in ("One more detail", "makes a loud clicking noise", "How it was decided",
                 "thread: subject reference T-1 on T-1"):
        assert text in page
    waiting = browser.get("/unprocessed").get_data(as_text=True)
    assert "Do you look after small offices?" in waiting and "Automatic reply" in waiting
    dana = samples(db)["06-stranger.eml"]
    detail = browser.get(f"/unprocessed/{dana.id}").get_data(as_text=True)
    assert "Harbour" in detail and "an alias no route names" in detail
    assert re.search(r"teach", detail, re.IGNORECASE)

    # Teaching the sender's domain to a client turns the email into a ticket.
    fabrikam = ticket(db, "T-2").client
    resp = browser.post(f"/unprocessed/{dana.id}/teach", {"teach-client_id": fabrikam.id, "teach-scope": "domain"})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Message, dana.id).ticket.client_id == fabrikam.id

    # The steps to a real mailbox name what the pages show.
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == DEMO_MAILBOX))
    mailboxes = browser.get("/mailboxes").get_data(as_text=True)
    form = browser.get("/mailboxes/new").get_data(as_text=True)
    detail = browser.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    nav = browser.get("/").get_data(as_text=True)
    for claim, page in (("Add a mailbox", mailboxes), ("Test connection", form), ("Set an outgoing server", detail),
                        ("Activate", detail), ("Mail settings", nav)):
        assert f"**{claim}**" in first_run or f"**Mailboxes → {claim}**" in first_run
        assert claim in page
    assert "**Connect**" in first_run and "Connect" in form
    assert "be deleted from its page" in first_run and "Delete the mailbox" in detail
    for claim in ("T-1 for Contoso", "T-2 for Fabrikam", "T-3", "hello@demo.example", "Harbour Bakery",
                  "support@demo.example", "`portal/demo_mail/`"):
        assert claim in first_run
