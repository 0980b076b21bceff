"""Custom ticket fields in the portal (issue #18): Settings › Custom fields (admins), the values on
the ticket page (typed, checked, in the history), the list's filter and the CSV export, the
ticket-type allow-list, and extraction rules typed on the route form."""

import csv
import io

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, CustomField, Route, TicketFieldValue
from portal.services import commit
from portal.services import custom_fields as cf
from tests.mailfactory import email
from tests.portal.conftest import fresh, ticket_history


def fields_named(msp_id):
    db.session.expire_all()
    return [(f.name, f.kind, f.choices) for f in cf.list_fields(msp_id)]


def test_an_admin_adds_changes_moves_and_removes_fields(admin, msp):
    page = admin.get("/settings/custom-fields").get_data(as_text=True)
    assert "No custom fields yet" in page
    assert admin.post("/settings/custom-fields", {"name": "Asset", "kind": "text"}).status_code == 303
    assert admin.post("/settings/custom-fields", {"name": "Site", "kind": "choice",
                                                  "choices": "Berlin\nParis\n\nberlin"}).status_code == 303
    assert fields_named(msp.id) == [("Asset", "text", []), ("Site", "choice", ["Berlin", "Paris"])]
    site = db.session.scalar(select(CustomField).where(CustomField.name == "Site"))
    assert admin.post(f"/settings/custom-fields/{site.id}/move", {"direction": "up"}).status_code == 303
    assert [n for n, _k, _c in fields_named(msp.id)] == ["Site", "Asset"]
    assert admin.post(f"/settings/custom-fields/{site.id}/edit", {"name": "Office", "kind": "choice",
                                                                  "choices": "Berlin\nParis\nRome"}).status_code == 303
    assert fields_named(msp.id)[0] == ("Office", "choice", ["Berlin", "Paris", "Rome"])
    page = admin.get("/settings/custom-fields").get_data(as_text=True)
    assert "Remove the field Office? No ticket has a value in it." in page
    assert admin.post(f"/settings/custom-fields/{site.id}/delete").status_code == 303
    assert [n for n, _k, _c in fields_named(msp.id)] == ["Asset"]
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_type == "client")).all()
    assert {"field Asset added", "field Office changed", "field Office removed"} <= set(actions)


@pytest.mark.parametrize("data, field, words", [
    ({"name": "", "kind": "text"}, "name", "Give the field a name."),
    ({"name": "Asset", "kind": "text"}, "name", "There is already a field called Asset."),
    ({"name": "asset", "kind": "number"}, "name", "There is already a field called asset."),
    ({"name": "Site", "kind": "choice", "choices": "\n"}, "choices", "A choice field needs its choices"),
    ({"name": "Size", "kind": "colour"}, "kind", "The kind is one of text, number, choice, date."),
])
def test_a_field_that_is_not_right_is_refused_beside_its_input(admin, msp, data, field, words):
    admin.post("/settings/custom-fields", {"name": "Asset", "kind": "text"})
    resp = admin.post("/settings/custom-fields", data)
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert f'id="cf-{field}-error"' in body and words in body
    assert len(fields_named(msp.id)) == 1


def test_a_technician_may_not_set_up_fields(tech, acme):
    assert tech.get("/settings/custom-fields").status_code == 403
    assert tech.post("/settings/custom-fields", {"name": "Asset", "kind": "text"}).status_code == 403
    assert cf.list_fields(acme.msp.id) == []


@pytest.fixture
def ticket(world, acme):
    for name, kind, choices in (("Asset", "text", []), ("Hours", "number", []), ("Site", "choice", ["Berlin", "Paris"]),
                                ("Due", "date", [])):
        cf.save_field(acme.msp, cf.FieldInput(name, kind, choices), actor=None)
    commit()
    return world.deliver(acme.box, email(subject="Printer")).ticket


def form_of(ticket, **values):
    return {f"cf{f.id}": values.get(f.name, "") for f in cf.list_fields(ticket.msp_id)}


def test_a_technician_fills_the_fields_on_the_ticket_and_the_history_says_so(tech, acme, ticket):
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert 'type="date"' in page and '<option value="Paris">Paris</option>' in page
    resp = tech.post(f"/tickets/{ticket.reference}/custom-fields",
                     form_of(ticket, Asset="PC-042", Hours="1,5", Site="paris", Due="2026-12-24"))
    assert resp.status_code == 303
    assert cf.ticket_values(fresh(ticket.id)) == {f.id: v for f, v in zip(
        cf.list_fields(acme.msp.id), ["PC-042", "1.5", "Paris", "2026-12-24"])}
    entry = ticket_history(ticket.id)[-1]
    assert entry.action == "fields changed" and entry.changes["Site"] == [None, "Paris"]
    # Emptying a field removes its value.
    tech.post(f"/tickets/{ticket.reference}/custom-fields", form_of(ticket, Asset="", Hours="1.5", Site="Paris",
                                                                      Due="2026-12-24"))
    assert len(cf.ticket_values(fresh(ticket.id))) == 3


def test_values_that_do_not_fit_their_kind_are_named_and_nothing_is_saved(tech, acme, ticket):
    resp = tech.post(f"/tickets/{ticket.reference}/custom-fields",
                     form_of(ticket, Asset="ok", Hours="many", Site="Rome", Due="tomorrow"), htmx=True)
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "Hours: not a number." in body and "Site: one of Berlin, Paris." in body
    assert "Due: not a date (YYYY-MM-DD)." in body
    assert cf.ticket_values(fresh(ticket.id)) == {}


def test_the_list_filters_by_a_field_and_the_csv_has_a_column_per_field(tech, world, acme, ticket):
    other = world.deliver(acme.box, email(subject="Scanner")).ticket
    tech.post(f"/tickets/{ticket.reference}/custom-fields", form_of(ticket, Asset="=HYPERLINK(1)", Site="Paris"))
    tech.post(f"/tickets/{other.reference}/custom-fields", form_of(other, Site="Berlin", Hours="3"))
    site = next(f for f in cf.list_fields(acme.msp.id) if f.name == "Site")
    tech.get("/tickets")  # the flashed notes are shown once
    listed = tech.get(f"/tickets?field={site.id}&value=paris").get_data(as_text=True)
    assert f"/tickets/{ticket.reference}\"" in listed and f"/tickets/{other.reference}\"" not in listed
    assert f'href="/tickets/export.csv?field={site.id}&amp;value=paris"' in listed and "Download CSV" in listed
    rows = list(csv.reader(io.StringIO(tech.get("/tickets/export.csv").get_data(as_text=True))))
    assert rows[0][-4:] == ["Asset", "Hours", "Site", "Due"]
    by_ref = {r[0]: r for r in rows[1:]}
    assert by_ref[ticket.reference][-4:] == ["'=HYPERLINK(1)", "", "Paris", ""]
    assert by_ref[other.reference][-4:] == ["", "3", "Berlin", ""]
    filtered = list(csv.reader(io.StringIO(tech.get(f"/tickets/export.csv?field={site.id}&value=Berlin")
                                           .get_data(as_text=True))))
    assert [r[0] for r in filtered[1:]] == [other.reference]


def test_another_msps_fields_are_neither_shown_nor_filled(world, tech, acme, ticket):
    beta = world.msp("Beta MSP")
    theirs = cf.save_field(beta, cf.FieldInput("Their secret", "text"), actor=None)
    commit()
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "Their secret" not in page and "Their secret" not in tech.get("/tickets").get_data(as_text=True)
    tech.post(f"/tickets/{ticket.reference}/custom-fields", {f"cf{theirs.id}": "x", **form_of(ticket)})
    assert db.session.scalar(select(TicketFieldValue).where(TicketFieldValue.field_id == theirs.id)) is None


def test_the_type_allow_list_holds_on_the_ticket_mailbox_and_route(admin, world, msp):
    assert admin.post("/ticket-types", {}).status_code == 404  # under /settings
    assert admin.post("/settings/ticket-types", {"ticket_types": "Incident\nRequest\nincident"}).status_code == 303
    assert cf.ticket_types(msp.id) == ["Incident", "Request"]
    box = world.mailbox(msp, acknowledge=False)
    ticket = world.deliver(box, email(subject="Printer")).ticket
    page = admin.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert '<option value="Incident"></option><option value="Request"></option>' in page  # the suggestions
    resp = admin.post(f"/tickets/{ticket.reference}/fields", {"priority": "normal", "type": "Outage", "status": "new"})
    assert resp.status_code == 422 and "The type is one of Incident, Request." in resp.get_data(as_text=True)
    assert admin.post(f"/tickets/{ticket.reference}/fields", {"priority": "normal", "type": "Request",
                                                              "status": "new"}).status_code == 303
    assert fresh(ticket.id).type == "Request"
    with pytest.raises(Exception, match="The type is one of Incident, Request."):
        world.mailbox(msp, address="other@acme.example", default_type="Outage")


def test_extraction_rules_are_typed_on_the_route_form_and_refused_with_their_reason(admin, world, msp):
    cf.save_field(msp, cf.FieldInput("Asset", "text"), actor=None)
    box = world.mailbox(msp, routes=[{"name": "Everything else", "client": msp, "fallback": True}])
    route = box.routes[0]
    url = f"/mailboxes/{box.id}/routes/{route.id}/edit"
    base = {"name": "Everything else", "fallback": "y", "client_id": str(msp.id), "default_status": "",
            "default_priority": "", "default_type": "", "acknowledge": "y", "enabled": "y"}
    resp = admin.post(url, {**base, "extraction_rules": "subject | priority | (?P<p>[a-z"})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "Extraction rule 1: " in body and "is not a regular expression" in body
    rules = "subject | priority | \\[(?P<p>high|low)\\]\nbody | field:Asset | Asset: (?P<a>\\S+)"
    assert admin.post(url, {**base, "extraction_rules": rules}).status_code == 303
    db.session.expire_all()
    assert db.session.get(Route, route.id).extraction_rules == [
        {"source": "subject", "pattern": r"\[(?P<p>high|low)\]", "target": "priority"},
        {"source": "body", "pattern": r"Asset: (?P<a>\S+)", "target": "field:Asset"}]
    assert "body | field:Asset | Asset: (?P&lt;a&gt;\\S+)" in admin.get(url).get_data(as_text=True)
    # Renaming the field carries its rules along; removing it takes them away.
    asset = cf.list_fields(msp.id)[0]
    admin.post(f"/settings/custom-fields/{asset.id}/edit", {"name": "Asset tag", "kind": "text"})
    db.session.expire_all()
    assert db.session.get(Route, route.id).extraction_rules[1]["target"] == "field:Asset tag"
    admin.post(f"/settings/custom-fields/{asset.id}/delete")
    db.session.expire_all()
    assert [r["target"] for r in db.session.get(Route, route.id).extraction_rules] == ["priority"]


def test_the_routing_check_says_what_each_rule_took_and_saves_nothing(admin, world, msp):
    cf.save_field(msp, cf.FieldInput("Hours", "number"), actor=None)
    box = world.mailbox(msp, acknowledge=False, routes=[{
        "name": "Everything else", "client": msp, "fallback": True, "extraction_rules": [
            {"source": "subject", "pattern": r"\[(?P<p>\w+)\]", "target": "priority"},
            {"source": "body", "pattern": r"Hours: (?P<h>\S+)", "target": "field:Hours"}]}])
    admin.get("/unprocessed/check")
    resp = admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": "ann@contoso.com",
                                             "to": box.address, "subject": "[high] Printer", "body": "Hours: lots"},
                      htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200, body
    assert "extraction: subject → priority took &#39;high&#39;: priority set to high" in body
    assert "extraction: body → field:Hours took &#39;lots&#39;: not applied, not a number" in body
    assert db.session.scalar(select(TicketFieldValue)) is None
