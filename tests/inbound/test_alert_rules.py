"""Alert rules on a real database (issue #18): monitoring mail keeps one ticket per open problem,
repeats are counted, a recovery resolves or marks, a flapping key is marked and not reopened, an
alert sender never gets an acknowledgement, and two runs at once open one ticket for a key."""

import re
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.batch import decide_batch, decide_one
from portal.inbound.context import IngestContext
from portal.inbound.fetch import store_raw
from portal.inbound.replay import CheckInput, Pipeline, check_routing
from portal.mail.alerts import AlertRuleError, clean_alert_rule, compile_rule
from portal.models import Mailbox, Message, Route, Ticket
from portal.services import ValidationError, commit
from portal.services.routes import get_route, route_input_of, save_route
from tests.mailfactory import email

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "alert-rules"
SAMPLES = Path(__file__).parent / "alert_samples"
RMM = {"key": {"from": "header", "header": "X-Alert-Key"}, "state": {"from": "header", "header": "X-Alert-State"},
       "problem": ["CRITICAL", "PROBLEM"], "recovery": ["OK"]}
RMM_SENDER = "alerts@rmm.contoso.example"


def rmm(state: str, key: str = "contoso/srv01/disk-c", **kw) -> bytes:
    # No Auto-Submitted header: many RMM tools send none, and then only the alert rule keeps the
    # acknowledgement back.
    return email(sender=RMM_SENDER, to=["alerts@acme.example"], subject=f"{key} is {state}",
                 headers={"X-Alert-Key": key, "X-Alert-State": state}, **kw)


def monitoring_desk(world, rule=RMM, *, address="alerts@acme.example", msp=None, contoso=None):
    msp = msp or world.msp("Acme MSP")
    contoso = contoso or world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address=address, acknowledge=True, routes=[
        {"name": "Monitoring", "client": contoso, "recipients": ["alerts@acme.example"], "alert_rule": rule},
        {"name": "Everything else", "client": msp, "fallback": True}])
    return msp, contoso, box


@pytest.fixture
def desk(world):
    return monitoring_desk(world)


def tickets() -> list[Ticket]:
    db.session.expire_all()
    return list(db.session.scalars(select(Ticket).order_by(Ticket.id)))


# --- the rule on its own ---------------------------------------------------------------------------


def test_a_rule_reads_the_key_from_named_groups_and_the_state_from_its_words():
    rule = compile_rule(clean_alert_rule({"key": {"from": "subject", "pattern": yaml.safe_load(
        (EXAMPLES / "nagios-icinga.yaml").read_text())["alert_rule"]["key"]["pattern"]}, "state": {"from": "key"}}))
    reading, _ = rule.read("** PROBLEM Service Alert: web01/HTTP is CRITICAL **", "", lambda _n: None)
    assert (reading.key, reading.state) == ("web01/HTTP", "problem")
    reading, _ = rule.read("** RECOVERY Host Alert: db01 is UP **", "", lambda _n: None)
    assert (reading.key, reading.state) == ("db01", "recovery")
    reading, why = rule.read("Your invoice", "", lambda _n: None)
    assert reading is None and why == "the key pattern does not match the subject"


def test_a_rule_is_checked_on_save():
    with pytest.raises(AlertRuleError) as bad:
        clean_alert_rule({"key": {"from": "subject", "pattern": "(?P<host>[a-z"}})
    assert "Not a valid regular expression" in bad.value.errors["alert_key_pattern"][0]
    with pytest.raises(AlertRuleError) as bad:
        clean_alert_rule({"key": {"from": "subject", "pattern": "host (\\w+)"}, "state": {"from": "subject"}})
    assert "Name at least one group" in bad.value.errors["alert_key_pattern"][0]
    with pytest.raises(AlertRuleError) as bad:
        clean_alert_rule({"key": {"from": "header"}, "problem": "DOWN", "recovery": "down, up", "flap_minutes": 0})
    errors = bad.value.errors
    assert "Name the header" in errors["alert_key_header"][0]
    assert "A word cannot mean both: DOWN" in errors["alert_recovery_words"][0]
    assert "from 1 to" in errors["alert_flap_minutes"][0]
    assert "group named state" in errors["alert_state_from"][0]


def test_only_the_start_of_a_long_body_is_searched():
    rule = compile_rule(clean_alert_rule({"key": {"from": "body", "pattern": "Host: (?P<host>\\S+)"},
                                          "state": {"from": "body"}}))
    early = "State: DOWN\nHost: db01\n" + "x" * 20_000
    late = "x" * 20_000 + "State: DOWN\nHost: db01\n"
    assert rule.read("", early, lambda _n: None)[0].key == "db01"
    assert rule.read("", late, lambda _n: None)[0] is None


# --- the pipeline ----------------------------------------------------------------------------------


def test_repeated_problems_append_to_the_open_ticket_and_are_counted(world, desk):
    _msp, contoso, box = desk
    first = world.deliver(box, rmm("CRITICAL"))
    assert first.outcome == "created" and first.ticket.client_id == contoso.id
    assert "alert rule of route 'Monitoring': key 'contoso/srv01/disk-c', problem (CRITICAL)" in first.trace
    second = world.deliver(box, rmm("CRITICAL"))
    third = world.deliver(box, rmm("CRITICAL"))
    assert second.outcome == third.outcome == "appended"
    [ticket] = tickets()
    assert ticket.alert_key == "contoso/srv01/disk-c" and ticket.alert_count == 3 and ticket.status == "new"
    assert any(line.startswith(f"alert 3 since {ticket.alert_first_at:%H:%M} UTC on {ticket.reference}")
               for line in third.trace)
    assert len(ticket.messages) == 3
    other = world.deliver(box, rmm("CRITICAL", key="contoso/srv02/cpu"))
    assert other.outcome == "created" and len(tickets()) == 2


def test_a_recovery_appends_and_resolves(world, desk):
    box = desk[2]
    world.deliver(box, rmm("CRITICAL"))
    recovery = world.deliver(box, rmm("OK"))
    [ticket] = tickets()
    assert recovery.outcome == "appended" and ticket.status == "resolved" and ticket.alert_state == "recovery"
    assert "status new → resolved" in recovery.trace and ticket.alert_count == 2
    # The next problem opens a new ticket: the last one was resolved and the key does not flap.
    again = world.deliver(box, rmm("CRITICAL"))
    assert again.outcome == "created" and len(tickets()) == 2


def test_a_recovery_only_marks_when_the_rule_says_so(world):
    box = monitoring_desk(world, {**RMM, "on_recovery": "mark"})[2]
    world.deliver(box, rmm("CRITICAL"))
    recovery = world.deliver(box, rmm("OK"))
    [ticket] = tickets()
    assert ticket.status == "new" and ticket.alert_state == "recovery"
    assert any("marked recovered; status new unchanged" in line for line in recovery.trace)


def test_a_recovery_without_an_open_ticket_is_recorded_without_one(world, desk):
    box = desk[2]
    result = world.deliver(box, rmm("OK"))
    assert result.outcome == "ignored" and result.ticket is None and tickets() == []
    assert "ignored: a recovery for a problem with no open ticket (contoso/srv01/disk-c); kept, no ticket opened" \
        in result.trace
    assert db.session.scalar(select(func.count()).select_from(Message)) == 1


def test_a_flapping_key_is_marked_and_not_reopened(world):
    box = monitoring_desk(world, {**RMM, "flap_changes": 2, "flap_minutes": 60})[2]
    outcomes = [world.deliver(box, rmm(state)) for state in ("CRITICAL", "OK", "CRITICAL", "OK")]
    assert [r.outcome for r in outcomes] == ["created", "appended", "created", "appended"]
    first, second = tickets()
    assert first.status == second.status == "resolved"
    # Three state changes within the hour, more than the two the rule allows: flapping.
    assert second.alert_flapping and any("marked flapping" in line for line in outcomes[-1].trace)
    flap = world.deliver(box, rmm("CRITICAL"))
    assert flap.outcome == "appended" and flap.ticket.id == second.id
    assert any("flapping (4 state changes in 60 minutes): appended to" in line and "not reopened" in line
               for line in flap.trace)
    assert len(tickets()) == 2 and tickets()[1].status == "resolved" and tickets()[1].alert_flapping


def test_an_alert_sender_never_gets_an_acknowledgement(world, desk, smtp_gateway):
    box = desk[2]
    assert box.acknowledge
    results = [world.deliver(box, rmm(s)) for s in ("CRITICAL", "CRITICAL", "OK")]
    assert "no acknowledgement: alert mail is never acknowledged" in results[0].trace[-2]
    # Ordinary mail from the same sender through the same route is acknowledged: the gateway works.
    plain = world.deliver(box, email(sender=RMM_SENDER, to=["alerts@acme.example"], subject="Please call me"))
    assert "not an alert mail (no X-Alert-Key header)" in " ".join(plain.trace)
    received = [m for m in smtp_gateway.messages if RMM_SENDER in m.rcpt_tos]
    assert len(received) == 1 and plain.ticket.reference in received[0].message["Subject"]


def test_threading_comes_first(world, desk):
    """A monitoring mail that names an alert ticket's reference is a reply: the status rules of
    threading apply (here: a resolved ticket is reopened), not the alert rule."""
    box = desk[2]
    world.deliver(box, rmm("CRITICAL"))
    world.deliver(box, rmm("OK"))
    [ticket] = tickets()
    reply = world.deliver(box, email(sender=RMM_SENDER, to=["alerts@acme.example"],
                                     subject=f"[{ticket.reference}] contoso/srv01/disk-c is CRITICAL",
                                     headers={"X-Alert-Key": "contoso/srv01/disk-c", "X-Alert-State": "CRITICAL"}))
    assert reply.outcome == "reopened" and reply.ticket.id == ticket.id
    assert not any(line.startswith("alert rule") for line in reply.trace)


def test_a_batch_keeps_one_ticket_per_key(app, desk):
    box = desk[2]
    ctx = IngestContext(box, app.config["SECRET_KEY"].encode(), app.config["TIDEMARK_MAIL_HOST"])
    stored = []
    for state in ("CRITICAL", "CRITICAL", "OK", "CRITICAL"):
        stored.append(store_raw(box, rmm(state), server_id=uuid.uuid4().hex, folder="INBOX"))
    db.session.flush()
    results = decide_batch(stored, ctx)
    commit()
    assert [r.outcome for r in results] == ["created", "appended", "appended", "created"]
    assert [(t.status, t.alert_count) for t in tickets()] == [("resolved", 3), ("new", 1)]


def test_two_runs_at_once_open_one_ticket_for_a_key(app, world):
    """Two mailboxes of one MSP get a problem for the same key at once: run B has read its
    configuration when run A decides and holds its transaction open; B must wait for A's ticket,
    then append to it."""
    msp, contoso, box_a = monitoring_desk(world)
    box_b = monitoring_desk(world, address="alerts2@acme.example", msp=msp, contoso=contoso)[2]
    mine = store_raw(box_a, rmm("CRITICAL"), server_id="a", folder="INBOX")
    theirs = store_raw(box_b, rmm("CRITICAL"), server_id="b", folder="INBOX")
    commit()
    box_b_id, their_id = box_b.id, theirs.id
    started, failures, outcome = threading.Event(), [], []

    def run_b():
        with app.app_context():
            try:
                ctx = IngestContext(db.session.get(Mailbox, box_b_id), app.config["SECRET_KEY"].encode())
                started.set()
                result = decide_one(db.session.get(type(theirs), their_id), ctx, max_tries=1)
                commit()
                outcome.append(result.outcome if result else None)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failures.append(exc)
                started.set()

    ctx = IngestContext(box_a, app.config["SECRET_KEY"].encode())
    assert decide_one(mine, ctx, max_tries=1).outcome == "created"  # A holds the MSP's counter lock now
    other = threading.Thread(target=run_b)
    other.start()
    assert started.wait(60)
    other.join(1.0)  # B waits on A's lock meanwhile
    commit()
    other.join(60)
    assert not failures, failures
    assert outcome == ["appended"]
    [ticket] = tickets()
    assert ticket.alert_count == 2


def test_the_routing_check_shows_the_alert_decision(app, world, desk):
    msp, _contoso, box = desk
    world.deliver(box, rmm("CRITICAL"))
    result = check_routing(msp.id, CheckInput(mailbox_id=box.id, sender=RMM_SENDER, to="alerts@acme.example",
                                              subject="contoso/srv01/disk-c is OK"),
                           Pipeline(app.config["SECRET_KEY"].encode(), app.config["TIDEMARK_MAIL_HOST"]))
    trace = " ".join(result.trace)
    assert "alert rule of route 'Monitoring': not an alert mail (no X-Alert-Key header)" in trace


def test_a_route_keeps_its_alert_rule_and_refuses_a_bad_one(world, desk):
    box = desk[2]
    route = next(r for r in box.routes if r.name == "Monitoring")
    assert route.alert_rule["key"] == {"from": "header", "header": "X-Alert-Key", "pattern": ""}
    assert route.alert_rule["on_recovery"] == "resolve" and route.alert_rule["flap_changes"] == 4
    data = route_input_of(route)
    data.alert_rule = {"key": {"from": "subject", "pattern": "(unclosed"}}
    with pytest.raises(ValidationError) as refused:
        save_route(box, data, actor=None, route=get_route(box, route.id))
    assert refused.value.errors["alert_key_pattern"][0].startswith("Alert rule: Not a valid regular expression")


# --- the shipped examples --------------------------------------------------------------------------

# Per example: what each of its sample mails (in order) does.
EXPECTED = {
    "nagios-icinga": ["created", "appended", "appended", "created"],
    "zabbix": ["created", "appended", "appended", "created"],
    "rmm-headers": ["created", "appended", "appended", "ignored"],
    "uptime-monitor": ["created", "appended", "appended", "created"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_shipped_example_imports_and_decides_its_samples(world, name):
    rule = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["alert_rule"]
    box = monitoring_desk(world, rule)[2]
    samples = sorted(SAMPLES.glob(f"{name}-*.eml"))
    assert len(samples) == len(EXPECTED[name])
    results = [world.deliver(box, path.read_bytes()) for path in samples]
    assert [r.outcome for r in results] == EXPECTED[name]
    first = tickets()[0]
    assert first.alert_count == 3 and first.alert_state == "recovery"
    assert first.status == ("new" if rule["on_recovery"] == "mark" else "resolved")
    assert all(any(line.startswith("alert rule of route 'Monitoring': key") for line in r.trace) for r in results)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_shipped_example_pastes_into_a_configuration_file(app, db, tmp_path, name):
    """As the docs say: the example's lines, indented, go into a route of the configuration file."""
    config = textwrap.dedent("""
        clients:
          - name: Demo MSP
            children:
              - name: Contoso
        mailboxes:
          - address: alerts@demo.example
            client: Demo MSP
            host: 127.0.0.1
            username: alerts
            password: "alertspw"
            routes:
              - name: Monitoring
                recipients: [alerts@demo.example]
                client: Contoso
        """) + textwrap.indent((EXAMPLES / f"{name}.yaml").read_text(), " " * 8) + \
        "      - {name: Everything else, fallback: true, client: Demo MSP}\n"
    path = tmp_path / "tidemark.yaml"
    path.write_text(config)
    result = app.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert result.exit_code == 0, result.output
    route = db.session.scalar(select(Route).where(Route.name == "Monitoring"))
    assert route.alert_rule == clean_alert_rule(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["alert_rule"])


def test_the_docs_examples_hold():
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "alert-rules.md").read_text(), re.S)
    rule = compile_rule(clean_alert_rule(yaml.safe_load(blocks[0])["alert_rule"]))
    reading, _ = rule.read("web01/HTTP is DOWN", "", lambda _n: None)
    assert (reading.key, reading.state) == ("web01/HTTP", "problem")
    assert rule.read("web01/HTTP is no longer DOWN: OK", "", lambda _n: None)[0].state == "recovery"
    route = yaml.safe_load(blocks[1])["mailboxes"][0]["routes"][0]
    assert route["alert_rule"] == yaml.safe_load((EXAMPLES / "zabbix.yaml").read_text())["alert_rule"]
