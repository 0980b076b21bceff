"""The outbox and the sender, against a real SMTP server (aiosmtpd on loopback)."""

import uuid
from email import message_from_bytes, policy
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.mail.refs import REPLY_MARKER, RefFormat
from portal.models import AutoMailLog, Message, Ticket
from portal.services import commit
from portal.outbound.settings import set_setting
from portal.outbound.templates import template_in_effect
from tests.mailfactory import email
from workers.sending import send_due

HOST = "tidemark.test"


@pytest.fixture
def setup(app, world, smtp_gateway):
    app.config["TIDEMARK_MAIL_HOST"] = HOST
    # The sender job waits on the queue, as with the worker down: each test runs it by hand.
    app.config["TIDEMARK_JOBS_SYNC"] = False
    msp = world.msp("Acme MSP", waterline="## Please reply above this line ##")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, response_address="help@acme.example")
    commit()
    return msp, contoso, box


def outbox(event=None):
    query = select(Message).where(Message.direction == "out").order_by(Message.id)
    return [m for m in db.session.scalars(query) if event is None or m.details["event"] == event]


def test_acknowledgement_arrives_with_threading_headers_marker_and_token(app, world, setup, smtp_server):
    _msp, _c, box = setup
    customer = world.deliver(box, email(sender="Alice <alice@contoso.com>", subject="Printer on fire",
                                        message_id="<c1@contoso.com>"))
    assert send_due() == {"sent": 1}
    received = smtp_server.last()
    ack = received.message
    assert received.rcpt_tos == ["alice@contoso.com"]
    assert ack["In-Reply-To"] == "<c1@contoso.com>" and "<c1@contoso.com>" in ack["References"]
    assert "[T-1]" in ack["Subject"] and ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All" and ack["X-Tidemark-Loop"] == HOST
    assert ack["From"].addresses[0].addr_spec == "help@acme.example"
    assert ack["Message-ID"].endswith(f"@{HOST}>") and str(uuid.UUID(customer.ticket.uuid)) in ack["Message-ID"]
    token = RefFormat().token("T-1", app.config["SECRET_KEY"].encode())
    text = ack.get_body(("plain",)).get_content()
    html = ack.get_body(("html",)).get_content()
    assert REPLY_MARKER in text and token in text and token in html
    assert "<style" not in html.lower() or "style=" in html  # styles are inlined on elements
    sent = outbox("ticket_created")[0]
    assert sent.delivery == "sent" and sent.message_id == ack["Message-ID"] and sent.raw_out
    assert db.session.scalar(select(func.count()).select_from(AutoMailLog)) == 1


def test_a_reply_to_the_acknowledgement_lands_on_the_same_ticket_cut_above_the_marker(world, setup, smtp_server):
    _msp, _c, box = setup
    first = world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire"))
    send_due()
    ack = smtp_server.last().message
    quoted = "\n".join("> " + line for line in ack.get_body(("plain",)).get_content().splitlines())
    reply = email(sender="alice@contoso.com", subject="Re: " + ack["Subject"], in_reply_to=ack["Message-ID"],
                  references=[ack["Message-ID"]], body=f"It is out now, thanks.\n\nOn Sun, 1 Nov 2026 at 10:02, Acme MSP <help@acme.example> wrote:\n{quoted}")
    result = world.deliver(box, reply)
    assert result.outcome == "appended" and result.ticket.id == first.ticket.id
    assert result.message.body_text.strip() == "It is out now, thanks."
    assert "In-Reply-To matched" in result.trace[0]


def test_the_subject_reference_alone_threads_a_reply(world, setup, smtp_server):
    _msp, _c, box = setup
    first = world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire"))
    send_due()
    ack = smtp_server.last().message
    result = world.deliver(box, email(sender="alice@contoso.com", subject="RE: " + ack["Subject"], body="ok"))
    assert result.ticket.id == first.ticket.id and "subject reference T-1" in result.trace[0]


def test_with_plus_addressing_only_the_tag_in_reply_to_threads(app, world, setup, smtp_server):
    msp, _c, _box = setup
    box = world.mailbox(msp, address="desk@acme.example", plus_addressing="only")
    first = world.deliver(box, email(sender="alice@contoso.com", to=["desk@acme.example"]))
    send_due()
    ack = smtp_server.last().message
    reply_to = ack["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("desk+T-1.") and reply_to.endswith("@acme.example")
    result = world.deliver(box, email(sender="alice@contoso.com", to=[reply_to], subject="no ref", body="hi"))
    assert result.ticket.id == first.ticket.id


def test_an_out_of_office_to_the_acknowledgement_gets_no_second_one(world, setup, smtp_server):
    _msp, _c, box = setup
    world.deliver(box, email(sender="alice@contoso.com"))
    send_due()
    # An auto-responder that answers every mail it receives, as Exchange does.
    for _round in range(3):
        got = smtp_server.last().message
        ooo = email(sender="alice@contoso.com", subject="Automatic reply: " + got["Subject"],
                    in_reply_to=got["Message-ID"], headers={"Auto-Submitted": "auto-replied"})
        result = world.deliver(box, ooo)
        assert result.outcome == "appended"
        send_due()
    assert len(smtp_server.messages) == 1  # the exchange stopped after our one acknowledgement


def test_a_badly_behaved_responder_that_changes_its_address_is_stopped(world, setup, smtp_server):
    _msp, _c, box = setup
    world.deliver(box, email(sender="first@bad.example", subject="Printer"))
    send_due()
    for n in range(5):  # no auto headers, no In-Reply-To, a new address every time
        got = smtp_server.last().message
        world.deliver(box, email(sender=f"ooo-{n}@bad.example", subject="Re: " + got["Subject"], body="away"))
        send_due()
    held = [m for m in outbox("ticket_created") if m.delivery == "held"]
    assert len(smtp_server.messages) <= 2 and held
    assert "same subject" in held[0].delivery_note


def test_no_acknowledgement_for_auto_generated_mail(world, setup, smtp_server):
    _msp, _c, box = setup
    world.deliver(box, email(sender="noreply@contoso.com", headers={"Auto-Submitted": "auto-generated"}))
    assert outbox("ticket_created") == [] and send_due() == {}


def test_no_address_gets_more_than_the_hourly_limit(world, setup, smtp_server):
    set_setting("auto_mail_limit_per_hour", 3)
    commit()
    _msp, _c, box = setup
    for i in range(5):
        world.deliver(box, email(sender="alice@contoso.com", subject=f"problem {i}"))
    states = send_due()
    assert states == {"sent": 3, "held": 2} and len(smtp_server.messages) == 3
    assert "already got 3 automatic mails in the last hour" in outbox("ticket_created")[-1].delivery_note


def test_temporary_failure_retries_later_and_permanent_failure_says_why(world, setup, smtp_server):
    from datetime import timedelta

    from portal.models.base import utcnow
    from portal.outbound.deliver import deliver
    from portal.outbound.servers import send_environment

    _msp, _c, box = setup
    world.deliver(box, email(sender="busy@contoso.com", subject="one"))
    world.deliver(box, email(sender="gone@contoso.com", subject="two"))
    assert send_due() == {"retrying": 1, "failed": 1}
    busy, gone = outbox("ticket_created")
    assert busy.delivery_note.startswith("retrying in 1 min") and "450" in busy.delivery_note
    assert gone.delivery == "failed" and "550" in gone.delivery_note and "gone@contoso.com" in gone.delivery_note
    assert send_due() == {}  # not due again yet
    smtp_server.rcpt_replies.pop("busy")
    assert deliver(busy, send_environment(), now=utcnow() + timedelta(minutes=2)) == "sent"
    commit()
    assert [m.rcpt_tos for m in smtp_server.messages] == [["busy@contoso.com"]]


def test_staging_switches_block_or_redirect_everything(world, setup, smtp_server):
    _msp, _c, box = setup
    set_setting("block_outgoing", True)
    commit()
    world.deliver(box, email(sender="alice@contoso.com", subject="a"))
    assert send_due() == {"blocked": 1} and smtp_server.messages == []
    assert outbox()[0].raw_out  # recorded as it would have gone out
    set_setting("block_outgoing", False)
    set_setting("override_recipient", "qa@acme.example")
    commit()
    world.deliver(box, email(sender="bob@contoso.com", subject="b"))
    send_due()
    assert smtp_server.last().rcpt_tos == ["qa@acme.example"]
    assert "instead of bob@contoso.com" in outbox()[-1].delivery_note


def test_alert_recipients_hear_of_new_tickets_and_of_a_failing_mailbox(world, app, setup, smtp_server):
    from portal.models.base import utcnow
    from portal.inbound.health import record_failure

    msp, _c, _box = setup
    box = world.mailbox(msp, address="noc-watch@acme.example", alert_recipients=["noc@acme.example"], acknowledge=False,
                        max_tries=1)
    world.deliver(box, email(sender="alice@contoso.com", to=["noc-watch@acme.example"]))
    record_failure(box, "authentication failed for noc-watch: the server said no", utcnow())
    record_failure(box, "authentication failed for noc-watch: the server said no", utcnow())  # same streak
    commit()
    assert send_due() == {"sent": 2}
    subjects = sorted(m.message["Subject"] for m in smtp_server.messages)
    assert all(m.rcpt_tos == ["noc@acme.example"] for m in smtp_server.messages)
    assert any("T-1" in s for s in subjects) and any("noc-watch@acme.example" in s or "fail" in s.lower() for s in subjects)


def test_the_alert_quotes_the_customers_mail_even_when_a_reply_came_first(world, app, setup, smtp_server):
    from portal.models import User
    from portal.services import ticket_replies

    msp, _c, _box = setup
    box = world.mailbox(msp, address="noc-watch@acme.example", alert_recipients=["noc@acme.example"], acknowledge=False)
    created = world.deliver(box, email(sender="alice@contoso.com", to=["noc-watch@acme.example"],
                                       body="The printer in room 4 is on fire."))
    tech = world.user(msp, "tech@acme.example", role="technician")
    ticket_replies.reply(created.ticket, db.session.get(User, tech.id), to="alice@contoso.com", cc="",
                         text="Coming over now.")
    commit()
    send_due()
    alert = next(m.message for m in smtp_server.messages if m.rcpt_tos == ["noc@acme.example"])
    text = alert.get_body(("plain",)).get_content()
    assert "room 4 is on fire" in text and "Coming over now" not in text


def test_our_own_mail_coming_back_is_recognised(world, setup, smtp_server):
    _msp, _c, box = setup
    world.deliver(box, email(sender="alice@contoso.com"))
    send_due()
    ack_bytes = smtp_server.last().data
    again = world.deliver(box, ack_bytes)
    assert again.outcome == "own", again.trace
    rewritten = message_from_bytes(ack_bytes, policy=policy.default)
    rewritten.replace_header("Message-ID", make_msgid(domain="exchange.example"))
    assert world.deliver(box, rewritten.as_bytes()).outcome == "own"  # the loop header still says so
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 1


def test_template_in_effect_own_then_shared_ancestor_then_built_in(world, setup):
    from portal.models import EmailTemplate

    msp, contoso, _box = setup
    sub = world.client(contoso, "Contoso Berlin")
    assert template_in_effect(sub, "ticket_created").template is None  # built-in
    db.session.add(EmailTemplate(msp_id=msp.id, client_id=contoso.id, event="ticket_created",
                                 text_source="Got it {{ ticket.reference }}\nThanks", shared=False))
    commit()
    assert template_in_effect(sub, "ticket_created").template is None  # not shared
    assert template_in_effect(contoso, "ticket_created").source.id == contoso.id
    db.session.scalar(select(EmailTemplate)).shared = True
    commit()
    assert template_in_effect(sub, "ticket_created").source.id == contoso.id


def test_a_broken_template_fails_the_mail_with_its_line_and_sends_nothing(world, setup, smtp_server):
    from portal.models import EmailTemplate

    msp, contoso, box = setup
    db.session.add(EmailTemplate(msp_id=msp.id, client_id=contoso.id, event="ticket_created",
                                 text_source="Subject {{ ticket.reference }}\nHello {{ ticket.nope }}"))
    commit()
    world.deliver(box, email(sender="alice@contoso.com"))
    assert send_due() == {"failed": 1} and smtp_server.messages == []
    note = outbox()[0].delivery_note
    assert "template of Contoso" in note and "line 2" in note


def test_a_rich_text_template_is_sent_as_both_parts_in_the_msps_layout(world, setup, smtp_server):
    from portal.models import EmailLayout, EmailTemplate

    msp, contoso, box = setup
    db.session.add(EmailTemplate(msp_id=msp.id, client_id=contoso.id, event="ticket_created",
                                 subject="Got {{ ticket.reference }}", body="<p>Dear {{ contact.name }}, <b>noted</b>.</p>"))
    db.session.add(EmailLayout(msp_id=msp.id, css="p { color: #202020; }", header="{{ reply_marker }}",
                               footer="{{ msp.name }}"))
    commit()
    world.deliver(box, email(sender="Alice <alice@contoso.com>"))
    assert send_due() == {"sent": 1}
    sent = message_from_bytes(smtp_server.last().data, policy=policy.default)
    assert sent["Subject"].endswith("Got T-1")
    text = sent.get_body(("plain",)).get_content()
    html = sent.get_body(("html",)).get_content()
    assert text.startswith(REPLY_MARKER) and "Dear Alice, noted." in text and "Acme MSP" in text
    assert '<p style="color: #202020;">Dear Alice, <b>noted</b>.</p>' in html


def test_without_an_outgoing_server_the_mail_fails_in_plain_words_and_is_not_rendered(app, world, redis, monkeypatch):
    app.config["TIDEMARK_JOBS_SYNC"] = False  # the sender job is run by hand below
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp)
    commit()
    world.deliver(box, email(sender="alice@contoso.com"))

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered although it cannot be sent")

    monkeypatch.setattr("portal.outbound.deliver.render_texts", no_rendering)
    assert send_due() == {"failed": 1}
    assert outbox()[0].delivery_note == "failed: no outgoing server is configured (set smtp: in the configuration)"


def test_one_run_sends_the_whole_backlog_not_just_the_first_hundred(world, setup, smtp_server):
    _msp, _c, box = setup
    for i in range(130):
        world.deliver(box, email(sender=f"user{i}@contoso.com", subject=f"problem {i}"))
    assert send_due() == {"sent": 130}
    assert len(smtp_server.messages) == 130 and {m.delivery for m in outbox()} == {"sent"}


def test_retries_not_due_yet_do_not_hold_up_mail_queued_after_them(world, setup):
    from datetime import timedelta

    from portal.models.base import utcnow
    from portal.outbound.deliver import due_batches

    _msp, _c, box = setup
    for i in range(5):
        world.deliver(box, email(sender=f"user{i}@contoso.com", subject=f"problem {i}"))
    waiting = outbox()[:4]
    for m in waiting:  # the oldest four wait for a retry in an hour
        m.delivery = "retrying"
        m.details = {**m.details, "next_attempt": (utcnow() + timedelta(hours=1)).isoformat()}
    commit()
    batches = list(due_batches(utcnow(), size=2))
    assert [[m.id for m in b] for b in batches] == [[outbox()[4].id]]
    later = [m.id for b in due_batches(utcnow() + timedelta(hours=2), size=2) for m in b]
    assert later == [m.id for m in outbox()]


def test_a_run_out_of_time_leaves_the_rest_queued_for_the_next(world, setup, smtp_server):
    _msp, _c, box = setup
    for i in range(3):
        world.deliver(box, email(sender=f"user{i}@contoso.com", subject=f"problem {i}"))
    assert send_due(budget=0) == {} and {m.delivery for m in outbox()} == {"queued"}
    assert send_due() == {"sent": 3} and len(smtp_server.messages) == 3


def test_mail_that_went_out_stays_sent_when_a_later_one_breaks_the_run(world, setup, smtp_server, monkeypatch):
    import portal.outbound.deliver as delivery

    _msp, _c, box = setup
    for i in range(2):
        world.deliver(box, email(sender=f"user{i}@contoso.com", subject=f"problem {i}"))
    real_compose, calls = delivery.compose, []

    def breaks_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the worker died here")
        return real_compose(*args, **kwargs)

    monkeypatch.setattr(delivery, "compose", breaks_the_second)
    with pytest.raises(RuntimeError):
        send_due()
    db.session.rollback()
    assert [m.delivery for m in outbox()] == ["sent", "queued"]
    monkeypatch.setattr(delivery, "compose", real_compose)
    assert send_due() == {"sent": 1}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["user0@contoso.com", "user1@contoso.com"]


def test_the_outbox_is_found_by_its_index_not_by_walking_every_message(world, setup):
    """Each sending run looks for queued, retrying and interrupted mail; without the outbox index
    (migration 0024) every look walked the messages table, millions of rows in a large portal."""
    from sqlalchemy import event

    from portal.outbound.deliver import due_batches, settle_interrupted
    from portal.models.base import utcnow

    _msp, _c, box = setup
    world.deliver(box, email(sender="alice@contoso.com", subject="one"))
    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if "FROM messages" in statement and "delivery" in statement.split("WHERE", 1)[-1]:
            seen.append((statement, parameters))

    engine = db.engine
    event.listen(engine, "before_cursor_execute", keep)
    try:
        assert [len(b) for b in due_batches(utcnow())] == [1]
        assert settle_interrupted() == []
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert len(seen) == 3  # two looks for due mail (the second finds none), one for interrupted mail
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # PostgreSQL plans by its statistics: with a handful of rows any path will do. So the
            # inbound mail a real portal has (no delivery, outside the partial index), analysed.
            columns = [f'"{c.name}"' for c in Message.__table__.columns if c.name not in ("id", "raw_message_id")]
            conn.exec_driver_sql(
                f"INSERT INTO messages ({', '.join(columns)}) SELECT {', '.join('m.' + c for c in columns)}"
                " FROM messages m, generate_series(1, 5000) WHERE m.direction = 'in'")
            conn.exec_driver_sql("ANALYZE messages")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        for statement, parameters in seen:
            plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + statement, parameters))
            assert "ix_messages_outbox" in plan, (statement, plan)


def test_a_connection_broken_after_the_final_dot_is_retried_as_mail_servers_do(world, setup, smtp_server):
    """Only a run that dies leaves its mail uncertain: a connection the server breaks before its
    answer is a failure the run sees, retried like any other (nothing was kept here)."""
    from datetime import timedelta

    from portal.models.base import utcnow
    from portal.outbound.deliver import deliver
    from portal.outbound.servers import send_environment

    _msp, _c, box = setup
    smtp_server.drop_after_data = 1
    world.deliver(box, email(sender="alice@contoso.com", subject="one"))
    assert send_due() == {"retrying": 1} and smtp_server.messages == []
    (ack,) = outbox("ticket_created")
    assert ack.delivery_note.startswith("retrying in 1 min") and "connection" in ack.delivery_note
    assert deliver(ack, send_environment(), now=utcnow() + timedelta(minutes=2)) == "sent"
    commit()
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"]]
