"""Routes' extraction rules (issue #18): after a route makes a ticket, each rule reads a value from
the subject, the visible body or a header and sets a custom field, the type, the priority, the SLA
policy or the contact; a value that does not fit is traced, not applied; a pattern that does not
compile, or would backtrack for ever, is refused when the route is saved."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.mail.extract import BODY_CAP, Rule, Targets, pattern_problems, run_rules
from portal.models import SlaPolicy, TicketFieldValue
from portal.services import ValidationError, commit
from portal.services import custom_fields as cf
from portal.services.routes import RouteInput, save_route
from tests.mailfactory import email


def values(ticket):
    return {row.field.name: row.value for row in db.session.scalars(
        select(TicketFieldValue).where(TicketFieldValue.ticket_id == ticket.id))}


@pytest.fixture
def desk(world, msp):
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    for name, kind, choices in (("Customer ID", "number", []), ("Site", "choice", ["Berlin", "Paris"]),
                                ("Due", "date", []), ("Asset", "text", [])):
        cf.save_field(msp, cf.FieldInput(name, kind, choices), actor=None)
    db.session.add(SlaPolicy(msp_id=msp.id, name="Gold", timezone="UTC", business_hours={}, holidays=[], targets={}))
    cf.save_ticket_types(msp, ["Incident", "Request"], actor=None)
    commit()
    rules = [
        {"source": "subject", "pattern": r"\[(?P<p>\w+)\]", "target": "priority"},
        {"source": "header:X-Customer-Id", "pattern": r"(?P<id>.+)", "target": "field:Customer ID"},
        {"source": "body", "pattern": r"Site: (?P<site>\w+)", "target": "field:Site"},
        {"source": "body", "pattern": r"Due: (?P<d>\S+)", "target": "field:Due"},
        {"source": "body", "pattern": r"Asset: (?P<a>.+)", "target": "field:Asset"},
        {"source": "body", "pattern": r"Type: (?P<t>\w+)", "target": "type"},
        {"source": "body", "pattern": r"SLA: (?P<s>\w+)", "target": "sla"},
        {"source": "body", "pattern": r"On behalf of: (?P<c>\S+)", "target": "contact"},
    ]
    box = world.mailbox(msp, acknowledge=False, routes=[
        {"name": "Contoso", "client": contoso, "recipients": ["support@acme.example"], "extraction_rules": rules},
        {"name": "Everything else", "client": msp, "fallback": True}])
    return msp, contoso, box


def test_rules_fill_every_kind_of_target_from_subject_body_and_header(world, desk):
    msp, contoso, box = desk
    body = ("Site: paris\nDue: 2026-12-24\nAsset: PC-042 (third floor)\nType: request\nSLA: gold\n"
            "On behalf of: Boss@Contoso.com\n")
    result = world.deliver(box, email(subject="[HIGH] Printer", body=body, headers={"X-Customer-Id": "4711"}))
    ticket = result.ticket
    assert ticket.priority == "high" and ticket.type == "Request"
    assert ticket.sla_policy_id == db.session.scalar(select(SlaPolicy.id).where(SlaPolicy.name == "Gold"))
    assert ticket.contact.email == "boss@contoso.com"
    assert values(ticket) == {"Customer ID": "4711", "Site": "Paris", "Due": "2026-12-24",
                              "Asset": "PC-042 (third floor)"}
    assert "extraction: subject → priority took 'HIGH': priority set to high" in result.trace
    assert "extraction: header:X-Customer-Id → field:Customer ID took '4711': Customer ID set to 4711" in result.trace
    assert any(line.startswith("extraction: body → sla took 'gold': sla set to") for line in result.trace)


def test_values_that_do_not_fit_are_traced_and_not_applied(world, desk):
    msp, contoso, box = desk
    body = "Site: Madrid\nDue: soon\nType: Outage\nSLA: Platinum\nOn behalf of: nobody\n"
    result = world.deliver(box, email(subject="[urgent] Printer", body=body, headers={"X-Customer-Id": "abc"}))
    ticket = result.ticket
    assert ticket.priority == "normal" and ticket.type is None and ticket.sla_policy_id is None
    assert ticket.contact.email == "alice@contoso.com"
    assert values(ticket) == {}
    trace = "\n".join(result.trace)
    for line in ("subject → priority took 'urgent': not applied, a priority is one of low, normal, high",
                 "field:Customer ID took 'abc': not applied, not a number",
                 "field:Site took 'Madrid': not applied, one of Berlin, Paris",
                 "field:Due took 'soon': not applied, not a date (YYYY-MM-DD)",
                 "type took 'Outage': not applied, not on the MSP's list of ticket types",
                 "sla took 'Platinum': not applied, no SLA policy of the MSP has that name",
                 "contact took 'nobody': not applied, not an email address"):
        assert line in trace


def test_a_rule_that_finds_nothing_does_not_fire_and_the_fallback_has_no_rules(world, desk):
    msp, contoso, box = desk
    result = world.deliver(box, email(subject="Printer", body="Nothing here."))
    assert not [line for line in result.trace if line.startswith("extraction")]
    assert values(result.ticket) == {}


@pytest.mark.parametrize("pattern, words", [
    (r"(?P<v>[a-z", "is not a regular expression"),
    (r"(\d+)", "exactly one named group"),
    (r"(?P<a>\d)(?P<b>\d)", "exactly one named group"),
    (r"(?P<v>(a+)+)", "repeated group"),
    (r"(?P<v>(\w*)*)", "repeated group"),
])
def test_a_bad_pattern_is_refused_on_save(world, desk, pattern, words):
    msp, contoso, box = desk
    route = box.routes[0]
    data = RouteInput(name="Contoso", client=contoso, recipients=["support@acme.example"],
                      extraction_rules=[{"source": "subject", "pattern": pattern, "target": "priority"}])
    with pytest.raises(ValidationError) as exc:
        save_route(box, data, actor=None, route=route)
    assert words in " ".join(exc.value.errors["extraction_rules"])
    assert pattern_problems(r"(?P<v>\d+)") == []


def test_sources_and_targets_are_checked_on_save(world, desk):
    msp, contoso, box = desk
    data = RouteInput(name="Contoso", client=contoso, recipients=["support@acme.example"], extraction_rules=[
        {"source": "footer", "pattern": r"(?P<v>\d+)", "target": "priority"},
        {"source": "header:", "pattern": r"(?P<v>\d+)", "target": "priority"},
        {"source": "subject", "pattern": r"(?P<v>\d+)", "target": "field:Nope"},
        {"source": "subject", "pattern": r"(?P<v>\d+)", "target": "owner"}])
    with pytest.raises(ValidationError) as exc:
        save_route(box, data, actor=None, route=box.routes[0])
    text = " ".join(exc.value.errors["extraction_rules"])
    assert "rule 1: 'footer'" in text and "rule 2: 'header:'" in text
    assert "no custom field called 'Nope'" in text and "rule 4: 'owner'" in text


def test_the_body_searched_is_capped():
    rules = [Rule("body", r"KEY=(?P<v>\d+)", "field:N")]
    targets = Targets(fields={"N": ("number", [])})
    near = "x" * 100 + "KEY=1"
    far = "x" * BODY_CAP + "KEY=2"
    assert [f.value for f in run_rules(rules, "", near, lambda name: None, targets)] == ["1"]
    assert run_rules(rules, "", far, lambda name: None, targets) == []
