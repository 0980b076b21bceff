"""SLA warnings and breaches to the staff, each once (twice run, or two runs at once), and the
customer's sla_changed notice; each mail through the outbox to a real SMTP server (aiosmtpd).
The ticket's clocks are set through portal.sla.clock, as the ticket hooks set them."""

import threading
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Message, SlaPolicy, Ticket, User
from portal.models.base import utcnow
from portal.outbound.settings import set_setting
from portal.services import commit
from portal.services import tickets as ticket_svc
from portal.services.sla import clock_policy
from portal.services.sla_alerts import alert_batch, candidate_batches, due_times, sla_changed
from portal.sla import clock
from tests.mailfactory import email
from workers.cron import SCHEDULE
from workers.maintenance import alert_service_levels
from workers.sending import send_due

ALWAYS = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
TARGETS = {"normal": {"response": 60, "resolution": 240}, "high": {"response": 30, "resolution": 120}}


def make_policy(msp, name="Standard", warning_percent=50):
    row = SlaPolicy(msp_id=msp.id, name=name, timezone="UTC", business_hours=ALWAYS, holidays=[],
                    targets=TARGETS, warning_percent=warning_percent)
    db.session.add(row)
    db.session.flush()
    return row


def start(ticket, row, at):
    ticket.sla_policy_id = row.id
    clock.start(ticket, clock_policy(row), at)


@pytest.fixture
def desk(app, world, smtp_gateway):
    """Acme MSP, client Contoso (in Berlin), a mailbox whose alert recipient is noc@, and a
    ticket from Alice assigned to Tom under a 24/7 policy warning at half of each target."""
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    db.session.get(Client, contoso.id).timezone = "Europe/Berlin"
    box = world.mailbox(msp, acknowledge=False, alert_recipients=["noc@acme.example"])
    tom = db.session.get(User, world.user(msp, "tom@acme.example", role="technician").id)
    ticket = world.deliver(box, email(sender="Alice <alice@contoso.com>", subject="Printer down")).ticket
    ticket.assignee_id = tom.id
    row = make_policy(msp)
    commit()
    return msp, ticket, row


def run(now):
    for msp_id, ids in candidate_batches(now):
        alert_batch(msp_id, ids, now)
        commit()
    send_due()


def sla_mail(smtp_server):
    return [m for m in smtp_server.messages if "SLA" in m.message["Subject"]]


def test_a_warning_at_the_policys_share_and_a_breach_go_out_once_each(desk, smtp_server):
    msp, ticket, row = desk
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(minutes=29))  # before half of the hour's response target
    assert sla_mail(smtp_server) == []
    run(t0 + timedelta(minutes=30))
    run(t0 + timedelta(minutes=31))  # the next minute's run: not again
    got = sla_mail(smtp_server)
    assert len(got) == 1 and sorted(got[0].rcpt_tos) == ["noc@acme.example", "tom@acme.example"]
    subject = got[0].message["Subject"]
    # The due time in the client's zone (Berlin in winter is UTC+1 or +2 in summer: either way not UTC).
    due = (t0 + timedelta(hours=1)).astimezone(ZoneInfo("Europe/Berlin"))
    assert f"SLA warning: first response due {due:%Y-%m-%d %H:%M %Z}" in subject and ticket.reference in subject
    assert "50% of the first response target" in got[0].message.get_body(("plain",)).get_content()
    run(t0 + timedelta(minutes=60))
    run(t0 + timedelta(minutes=90))  # the resolution's warning is at half of four hours: not yet
    subjects = [m.message["Subject"] for m in sla_mail(smtp_server)]
    assert len(subjects) == 2 and "SLA breached: first response" in subjects[1]
    run(t0 + timedelta(minutes=120))
    run(t0 + timedelta(minutes=121))
    subjects = [m.message["Subject"] for m in sla_mail(smtp_server)]
    assert len(subjects) == 3 and "SLA warning: resolution" in subjects[2]
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).sla_sent == ["response_warning", "response_breached",
                                                          "resolution_warning"]


def test_a_breach_already_past_sends_no_warning_before_it(desk, smtp_server):
    msp, ticket, row = desk
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(hours=5))  # both clocks past due at the first run
    assert sorted(m.message["Subject"].split(":")[0].split("] ")[1] for m in sla_mail(smtp_server)) == \
        ["SLA breached", "SLA breached"]
    run(t0 + timedelta(hours=6))
    assert len(sla_mail(smtp_server)) == 2


def test_paused_answered_and_resolved_clocks_send_nothing(desk, smtp_server, world):
    msp, ticket, row = desk
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    clock.pause(ticket, t0 + timedelta(minutes=10))  # waiting on the customer
    commit()
    run(t0 + timedelta(hours=5))
    assert sla_mail(smtp_server) == []
    clock.resume(ticket, clock_policy(row), t0 + timedelta(minutes=20))
    clock.responded(ticket, t0 + timedelta(minutes=25))
    ticket.status = "resolved"
    clock.resolved(ticket, clock_policy(row), t0 + timedelta(minutes=40))
    commit()
    run(t0 + timedelta(hours=5))
    assert sla_mail(smtp_server) == []


def test_nobody_assigned_and_no_recipients_records_the_threshold_and_sends_nothing(app, world, smtp_gateway,
                                                                                    smtp_server):
    msp = world.msp("Acme MSP")
    box = world.mailbox(msp, acknowledge=False)
    ticket = world.deliver(box, email(sender="bob@example.org", subject="Help")).ticket
    row = make_policy(msp)
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(minutes=45))
    assert smtp_server.messages == []
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).sla_sent == ["response_warning"]


def test_the_staging_block_records_the_mail_and_sends_none(desk, smtp_server):
    msp, ticket, row = desk
    set_setting("block_outgoing", True)
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(minutes=61))
    assert sla_mail(smtp_server) == []
    sent = [m for m in db.session.scalars(select(Message).where(Message.direction == "out"))
            if m.details["event"] == "sla_breached"]
    assert [m.delivery for m in sent] == ["blocked"]


def test_the_staging_override_sends_to_the_override_address(desk, smtp_server):
    msp, ticket, row = desk
    set_setting("override_recipient", "staging@acme.example")
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(minutes=61))
    assert [m.rcpt_tos for m in sla_mail(smtp_server)] == [["staging@acme.example"]]


def test_the_scheduled_job_runs_every_minute_and_sends(desk, smtp_server):
    msp, ticket, row = desk
    start(ticket, row, utcnow() - timedelta(minutes=70))
    commit()
    assert (alert_service_levels, 60) in SCHEDULE
    assert alert_service_levels() == 1  # the response breach; the resolution is at 70 of 240 minutes
    assert alert_service_levels() == 0
    send_due()
    assert len(sla_mail(smtp_server)) == 1


def test_two_runs_at_once_send_each_threshold_once(app, world, desk, smtp_server, monkeypatch):
    msp, ticket, row = desk
    set_setting("auto_mail_limit_per_hour", 100)  # noc@ hears of 12 new tickets and then 12 warnings
    box = ticket.mailbox
    tickets = [ticket] + [world.deliver(box, email(sender="alice@contoso.com", subject=f"Issue {n}")).ticket
                          for n in range(11)]
    for t in tickets:
        start(t, row, utcnow() - timedelta(minutes=45))  # each at its response warning
    commit()
    barrier, errors = threading.Barrier(2), []
    reached = clock.thresholds_reached

    def slowly(*args):  # a wide window between reading a ticket and recording what went out
        time.sleep(0.02)
        return reached(*args)

    monkeypatch.setattr(clock, "thresholds_reached", slowly)

    def one_run():
        try:
            with app.app_context():
                barrier.wait()
                alert_service_levels()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runners = [threading.Thread(target=one_run) for _ in range(2)]
    for r in runners:
        r.start()
    for r in runners:
        r.join()
    assert errors == []
    send_due()  # what a run's sender passed by while the other was sending
    warnings = [m for m in sla_mail(smtp_server) if "SLA warning" in m.message["Subject"]]
    assert len(warnings) == 12
    assert len({m.message["Subject"] for m in warnings}) == 12


def test_the_customer_hears_new_due_times_when_the_priority_changes_if_chosen(desk, smtp_server):
    msp, ticket, row = desk
    tom = db.session.scalar(select(User).where(User.email == "tom@acme.example"))
    start(ticket, row, utcnow() - timedelta(minutes=5))
    commit()
    set_setting("customer_notifications", ["closed", "reopened", "sla_changed"])
    before = due_times(ticket)
    ticket_svc.change_priority(ticket, "high", tom)  # recomputes the due times and tells the customer
    assert due_times(ticket) != before
    commit()
    send_due()
    got = [m for m in smtp_server.messages if m.rcpt_tos == ["alice@contoso.com"]]
    assert len(got) == 1 and got[0].message["Subject"].startswith("Re: [")
    text = got[0].message.get_body(("plain",)).get_content()
    assert "First reply by:" in text and "CE" in text.split("First reply by:")[1].split("\n")[0]
    # Unchanged due times tell nobody.
    assert sla_changed(ticket, due_times(ticket)) is None


def test_no_sla_changed_mail_when_the_notification_is_off(desk, smtp_server):
    msp, ticket, row = desk
    start(ticket, row, utcnow() - timedelta(minutes=5))
    commit()
    before = due_times(ticket)
    ticket.priority = "high"
    clock.recompute(ticket, clock_policy(row))
    assert before != due_times(ticket)
    assert sla_changed(ticket, before) is None  # the default notifications: closed and reopened
    commit()
    send_due()
    assert [m for m in smtp_server.messages if m.rcpt_tos == ["alice@contoso.com"]] == []

