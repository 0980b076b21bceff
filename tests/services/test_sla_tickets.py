"""Service levels on real tickets: the policy a new ticket gets (route → mailbox → client → its
parents), its clocks from the mail server's receive time, and the hooks of the ticket code
(waiting, resolved, reopened, the first public reply through the real sending path, priority and
policy changes), and the list's SLA filters and "due first" order."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.inbound.batch import decide_one
from portal.inbound.context import IngestContext
from portal.inbound.fetch import store_raw
from portal.models import Client, Message, Ticket, User
from portal.services import ValidationError, commit, sla
from portal.services import ticket_list, ticket_replies
from portal.services import tickets as ticket_svc
from tests.mailfactory import email
from workers.sending import send_due

BERLIN_WEEK = {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
# Friday 4 December 2026, 16:30 in Berlin (15:30 UTC): half an hour of business left that week.
FRIDAY_AFTERNOON = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)


def policy_values(name="Gold", **over):
    values = {"name": name, "timezone": "Europe/Berlin", "business_hours": BERLIN_WEEK, "holidays": ["2026-12-25"],
              "targets": {"normal": {"response": 60, "resolution": 240}, "high": {"response": 30, "resolution": 120}},
              "warning_percent": 75}
    return {**values, **over}


def deliver_at(app, mailbox, raw: bytes, received_at: datetime | None):
    """Deliver as a fetch does, the server's receive time kept on the raw message."""
    stored = store_raw(mailbox, raw, server_id=uuid.uuid4().hex, folder="INBOX")
    stored.received_at = received_at
    db.session.flush()
    ctx = IngestContext(mailbox, app.config["SECRET_KEY"].encode(), app.config["TIDEMARK_MAIL_HOST"])
    result = decide_one(stored, ctx, max_tries=1)
    commit()
    return result


@pytest.fixture
def desk(app, world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    ana = db.session.get(User, world.user(msp, "ana@acme.example").id)
    gold = sla.save_policy(msp.id, policy_values(), ana)
    sla.choose(contoso, gold, ana, msp.id)
    commit()
    return msp, contoso, box, ana, gold


def test_a_mail_on_friday_afternoon_is_due_on_monday(app, desk):
    _msp, contoso, box, _ana, gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    assert ticket.client_id == contoso.id and ticket.sla_policy_id == gold.id
    assert ticket.sla_started_at == FRIDAY_AFTERNOON
    # 30 minutes on Friday, the rest from 08:00 on Monday (07:00 UTC).
    assert ticket.first_response_due_at == datetime(2026, 12, 7, 7, 30, tzinfo=UTC)
    assert ticket.resolution_due_at == datetime(2026, 12, 7, 10, 30, tzinfo=UTC)


def test_without_a_receive_time_the_clock_starts_when_the_mail_was_fetched(app, desk):
    _msp, _contoso, box, _ana, _gold = desk
    result = deliver_at(app, box, email(sender="alice@contoso.com"), None)
    raw = result.message.raw_message
    assert raw.received_at is None and result.ticket.sla_started_at == raw.fetched_at


def test_a_client_without_a_policy_inherits_its_parents_and_route_and_mailbox_win(app, world, desk):
    msp, contoso, _box, ana, gold = desk
    berlin = world.client(contoso, "Contoso Berlin", allow=["berlin.contoso.com"])
    silver = sla.save_policy(msp.id, policy_values("Silver"), ana)
    bronze = sla.save_policy(msp.id, policy_values("Bronze"), ana)
    commit()
    assert sla.inherited_by(berlin) == (gold, contoso)
    box2 = world.mailbox(msp, address="noc@acme.example", acknowledge=False, routes=[
        {"name": "Berlin", "client": berlin, "recipients": ["*"], "senders": ["berlin.contoso.com"], "acknowledge": False},
        {"name": "Everything else", "client": contoso, "fallback": True, "acknowledge": False}])
    plain = deliver_at(app, box2, email(sender="bob@berlin.contoso.com", to=["noc@acme.example"]), FRIDAY_AFTERNOON)
    assert plain.ticket.client_id == berlin.id and plain.ticket.sla_policy_id == gold.id
    sla.choose(box2, silver, ana, msp.id)
    commit()
    by_mailbox = deliver_at(app, box2, email(sender="bob@berlin.contoso.com", to=["noc@acme.example"]), FRIDAY_AFTERNOON)
    assert by_mailbox.ticket.sla_policy_id == silver.id
    sla.choose(box2.routes[0], bronze, ana, msp.id)
    commit()
    by_route = deliver_at(app, box2, email(sender="bob@berlin.contoso.com", to=["noc@acme.example"]), FRIDAY_AFTERNOON)
    assert by_route.ticket.sla_policy_id == bronze.id
    # A client with none anywhere up the tree: no policy, no clocks.
    other = world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    sla.choose(box2, None, ana, msp.id)
    commit()
    assert sla.policy_id_for([other, db.session.get(Client, msp.id)]) is None


def test_changing_a_clients_policy_leaves_open_tickets_as_they_are(app, desk):
    msp, contoso, box, ana, gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    due = ticket.first_response_due_at
    silver = sla.save_policy(msp.id, policy_values("Silver", targets={"normal": {"response": 600}}), ana)
    sla.choose(contoso, silver, ana, msp.id)
    commit()
    assert ticket.sla_policy_id == gold.id and ticket.first_response_due_at == due


def test_waiting_pauses_the_clocks_and_the_customers_answer_resumes_them(app, desk):
    _msp, _contoso, box, ana, _gold = desk
    first = email(sender="alice@contoso.com", message_id="<w1@contoso.com>")
    ticket = deliver_at(app, box, first, FRIDAY_AFTERNOON).ticket
    response_due, resolution_due = ticket.first_response_due_at, ticket.resolution_due_at
    ticket_svc.change_status(ticket, "waiting", ana)
    assert ticket.sla_paused_at is not None
    # Waiting since Friday 16:45 Berlin; the customer answers on Monday at 10:00 Berlin:
    # 15 minutes on Friday and 2 hours on Monday did not count.
    ticket.sla_paused_at = datetime(2026, 12, 4, 15, 45, tzinfo=UTC)
    commit()
    answer = email(sender="alice@contoso.com", in_reply_to="<w1@contoso.com>", subject="Re: Printer on fire")
    deliver_at(app, box, answer, datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    assert ticket.status == "open" and ticket.sla_paused_at is None
    assert ticket.sla_paused_minutes == 135
    assert ticket.first_response_due_at == response_due + timedelta(minutes=135)
    assert ticket.resolution_due_at == resolution_due + timedelta(minutes=135)


def test_resolved_stops_the_clock_and_a_reopening_mail_goes_on_where_it_stopped(app, desk):
    _msp, _contoso, box, ana, _gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com", message_id="<r1@contoso.com>"),
                        FRIDAY_AFTERNOON).ticket
    resolution_due = ticket.resolution_due_at
    ticket_svc.change_status(ticket, "resolved", ana)
    assert ticket.resolved_at is not None
    ticket.resolved_at = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # Monday 09:00 Berlin
    commit()
    assert sla.ticket_sla(ticket).clocks[1].state == "met"
    again = email(sender="alice@contoso.com", in_reply_to="<r1@contoso.com>", subject="Re: still broken")
    deliver_at(app, box, again, datetime(2026, 12, 7, 9, 0, tzinfo=UTC))  # an hour later
    assert ticket.status == "open" and ticket.resolved_at is None
    assert ticket.resolution_due_at == resolution_due + timedelta(hours=1)


def test_the_first_public_reply_stops_the_response_clock_and_a_note_does_not(app, desk, smtp_gateway):
    _msp, _contoso, box, ana, _gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    ticket_replies.add_note(ticket, ana, "Looking into it.")
    commit()
    assert ticket.first_response_at is None
    ticket_replies.reply(ticket, ana, to="alice@contoso.com", cc="", text="We are on it.")
    commit()  # the sending job runs (and send_due sends whatever it left)
    send_due()
    db.session.expire_all()
    ticket = db.session.get(Ticket, ticket.id)
    sent = db.session.scalar(select(Message).where(Message.ticket_id == ticket.id, Message.direction == "out"))
    assert sent.delivery == "sent" and smtp_gateway.last().rcpt_tos == ["alice@contoso.com"]
    assert ticket.first_response_at is not None and abs(ticket.first_response_at - datetime.now(UTC)) < timedelta(minutes=2)
    first = ticket.first_response_at
    ticket_replies.reply(ticket, ana, to="alice@contoso.com", cc="", text="Fixed now.")
    commit()
    send_due()
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).first_response_at == first


def test_changing_the_priority_or_the_policy_recomputes_the_due_times(app, desk):
    msp, _contoso, box, ana, _gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    ticket_svc.change_priority(ticket, "high", ana)
    assert ticket.first_response_due_at == datetime(2026, 12, 4, 16, 0, tzinfo=UTC)  # 30 minutes, on Friday
    assert ticket.resolution_due_at == datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    slow = sla.save_policy(msp.id, policy_values("Slow", targets={"high": {"response": 600}}), ana)
    assert sla.change_ticket_policy(ticket, slow, ana)
    assert ticket.sla_policy_id == slow.id and ticket.resolution_due_at is None
    assert ticket.first_response_due_at == datetime(2026, 12, 8, 7, 30, tzinfo=UTC)  # 30 min Fri, 9 h Mon, 30 min Tue
    assert sla.change_ticket_policy(ticket, None, ana) and ticket.first_response_due_at is None
    commit()
    entries, _ = ticket_svc.ticket_changes(ticket)
    assert [e.changes["SLA policy"] for e in entries if e.action == "SLA policy"] == [["Slow", None], ["Gold", "Slow"]]


def test_another_msps_policy_is_refused_everywhere(app, world, desk):
    _msp, contoso, box, ana, _gold = desk
    other = world.msp("Other MSP")
    theirs = sla.save_policy(other.id, policy_values(), None)
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    with pytest.raises(ValidationError):
        sla.change_ticket_policy(ticket, theirs, ana)
    with pytest.raises(ValidationError):
        sla.choose(contoso, theirs, ana, contoso.msp_id)
    assert sla.get_policy(contoso.msp_id, theirs.id) is None


def test_the_form_reads_spans_hours_and_minutes_and_names_each_wrong_field(app, desk):
    msp, _contoso, _box, ana, _gold = desk
    form = sla.PolicyForm(name="Office", timezone="Europe/Berlin",
                          hours={"mon": "8:00-12:00, 13:00-17:00", "tue": "08:00-17:00"}, holidays="2026-12-24\n",
                          targets={"high": {"response": ("1", "30"), "resolution": ("", "")}}, warning_percent="80")
    policy = sla.save_policy(msp.id, sla.read_form(form), ana)
    assert policy.business_hours == {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "tue": [["08:00", "17:00"]]}
    assert policy.targets == {"high": {"response": 90}} and policy.holidays == ["2026-12-24"]
    assert sla.form_of(policy).targets["high"]["response"] == ("1", "30")
    bad = sla.PolicyForm(name="Office", timezone="Europe/Berlin", hours={"mon": "eight to five"}, holidays="",
                         targets={"normal": {"response": ("1", "75")}}, warning_percent="x")
    with pytest.raises(ValidationError) as refused:
        sla.read_form(bad)
    assert set(refused.value.errors) == {"hours_mon", "normal_response", "warning_percent"}
    with pytest.raises(ValidationError) as refused:
        sla.save_policy(msp.id, {**sla.read_form(form), "holidays": ["Christmas"]}, ana)
    assert set(refused.value.errors) == {"name", "holidays"}  # the name is taken too
    with pytest.raises(ValidationError) as refused:
        sla.save_policy(msp.id, sla.read_form(sla.PolicyForm(name="Closed", timezone="Mars/Olympus", hours={},
                                                             holidays="", targets={})), ana)
    assert set(refused.value.errors) == {"timezone"}


def test_deleting_a_policy_says_who_used_it_and_they_inherit_again(app, desk):
    _msp, contoso, box, ana, gold = desk
    ticket = deliver_at(app, box, email(sender="alice@contoso.com"), FRIDAY_AFTERNOON).ticket
    assert sla.usage(gold) == sla.Usage(clients=1, mailboxes=0, routes=0, tickets=1)
    assert sla.usage(gold).words() == "1 client, 1 open ticket"
    due = ticket.first_response_due_at
    sla.delete_policy(gold, ana)
    commit()
    assert contoso.sla_policy_id is None and ticket.sla_policy_id is None and ticket.first_response_due_at == due


def test_the_list_filters_breached_and_due_today_and_sorts_due_first(app, desk):
    msp, _contoso, box, ana, _gold = desk
    now = datetime.now(UTC)
    deliver_at(app, box, email(sender="alice@contoso.com", subject="late"), now - timedelta(days=30)).ticket
    soon = deliver_at(app, box, email(sender="alice@contoso.com", subject="soon"), now).ticket
    plain = deliver_at(app, box, email(sender="nobody@elsewhere.example", subject="none"), now).ticket
    # Pinned so that the test does not depend on the day it runs.
    soon.first_response_due_at, soon.resolution_due_at = now + timedelta(minutes=10), now + timedelta(days=3)
    answered = deliver_at(app, box, email(sender="alice@contoso.com", subject="answered"), now).ticket
    answered.first_response_due_at, answered.resolution_due_at = now - timedelta(days=1), now + timedelta(days=2)
    answered.first_response_at = now - timedelta(days=2)  # in time
    commit()
    assert plain.sla_policy_id is None and plain.first_response_due_at is None

    def listed(**kw):
        sort = kw.pop("sort", "updated")
        page = ticket_list.list_tickets(msp.id, ticket_list.TicketFilters(**kw), sort=sort, per_page=2)
        return page

    assert [t.subject for t in listed(sla="breached").tickets] == ["late"]
    # Seen from a zone where it is about noon, "soon" is due today whenever the test runs (in UTC
    # it was not, run at 23:59).
    noon = timezone(timedelta(hours=12 - now.hour))
    assert {t.subject for t in listed(sla="due_today", tz=noon).tickets} == {"late", "soon"}
    first = listed(sort="due")
    assert [t.subject for t in first.tickets] == ["late", "soon"]
    second = ticket_list.list_tickets(msp.id, ticket_list.TicketFilters(), sort="due", cursor=first.older, per_page=2)
    assert [t.subject for t in second.tickets] == ["answered", "none"]
    assert ana is not None


def test_the_list_page_offers_the_sla_filters_and_the_due_column(app, world, desk, browser):
    msp, _contoso, box, _ana, _gold = desk
    world.user(msp, email="tom@acme.example", role="technician")
    browser.sign_in("tom@acme.example")
    now = datetime.now(UTC)
    late = deliver_at(app, box, email(sender="alice@contoso.com", subject="Late one"), now - timedelta(days=30)).ticket
    deliver_at(app, box, email(sender="nobody@elsewhere.example", subject="No policy"), now)
    page = browser.get("/tickets?sla=breached").get_data(as_text=True)
    assert "Late one" in page and "No policy" not in page and 'value="breached" selected' in page
    assert 'class="badge overdue"' in page
    page = browser.get("/tickets?sort=due").get_data(as_text=True)
    assert page.index("Late one") < page.index("No policy") and late.reference in page
    assert browser.get("/tickets?sla=nonsense").status_code == 200
