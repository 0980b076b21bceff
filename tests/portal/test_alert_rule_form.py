"""A route's alert rule on its form: saved as typed, refused next to its field when wrong; the
ticket list and page count the alert mails of a problem."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Route
from tests.mailfactory import email
from tests.portal.test_route_forms import route_form


@pytest.fixture
def box(world, msp):
    contoso = world.client(msp, "Contoso")
    return world.mailbox(msp, address="alerts@acme.example", routes=[
        {"name": "Monitoring", "client": contoso, "recipients": ["alerts@acme.example"]},
        {"name": "Everything else", "client": msp, "fallback": True}])


def monitoring() -> Route:
    db.session.expire_all()
    return db.session.scalar(select(Route).where(Route.name == "Monitoring"))


def alert_fields(**values):
    return {"alert_on": "y", "alert_key_from": "subject", "alert_key_header": "",
            "alert_key_pattern": r"Monitor is (?P<state>DOWN|UP): (?P<monitor>.+)", "alert_state_from": "key",
            "alert_state_header": "", "alert_state_pattern": "", "alert_problem_words": "DOWN",
            "alert_recovery_words": "UP", "alert_on_recovery": "mark", "alert_flap_changes": "3",
            "alert_flap_minutes": "30", **values}


def test_an_alert_rule_is_saved_from_the_route_form_and_shown_again(admin, box):
    route = monitoring()
    url = f"/mailboxes/{box.id}/routes/{route.id}/edit"
    page = admin.get(url).get_data(as_text=True)
    assert 'id="section-alert-rule"' in page and not re.search(r'id="section-alert-rule"[^>]* open', page)
    resp = admin.post(url, route_form(route.client, name="Monitoring", recipients="alerts@acme.example",
                                      **alert_fields()))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert '<span class="badge alert" title="One ticket per open monitoring problem">alert rule</span>' in \
        admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert monitoring().alert_rule == {
        "key": {"from": "subject", "header": "", "pattern": r"Monitor is (?P<state>DOWN|UP): (?P<monitor>.+)"},
        "state": {"from": "key", "header": "", "pattern": ""}, "problem": ["DOWN"], "recovery": ["UP"],
        "on_recovery": "mark", "flap_changes": 3, "flap_minutes": 30}
    page = admin.get(url).get_data(as_text=True)
    assert re.search(r'id="section-alert-rule" open', page)
    assert re.search(r'<input[^>]* checked id="alert_on"', page) and 'value="30"' in page
    # Unticked, the rule is gone.
    resp = admin.post(url, route_form(route.client, name="Monitoring", recipients="alerts@acme.example",
                                      **alert_fields(alert_on=None)))
    assert resp.status_code == 303 and monitoring().alert_rule is None


def test_a_wrong_alert_rule_is_refused_next_to_its_fields(admin, box):
    route = monitoring()
    resp = admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", route_form(
        route.client, name="Monitoring", recipients="alerts@acme.example",
        **alert_fields(alert_key_pattern="(?P<host>[a-z", alert_flap_changes="many")), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert 'id="alert_key_pattern-error"' in body and "Not a valid regular expression" in body
    assert 'id="alert_flap_changes-error"' in body and "A whole number from 2 to 100" in body
    assert re.search(r'id="section-alert-rule" open', body)
    assert monitoring().alert_rule is None


def test_the_ticket_list_and_page_count_a_problems_alerts(admin, world, box):
    route = monitoring()
    admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", route_form(
        route.client, name="Monitoring", recipients="alerts@acme.example", **alert_fields()))
    for _ in range(3):
        result = world.deliver(box, email(sender="monitor@uptime.example", to=["alerts@acme.example"],
                                          subject="Monitor is DOWN: Shop website"))
    listing = admin.get("/tickets").get_data(as_text=True)
    assert re.search(r'3 alerts since <time datetime="[^"]+"', listing)
    page = admin.get(f"/tickets/{result.ticket.reference}").get_data(as_text=True)
    assert "<dt>Alert</dt><dd>Shop website: " in page and "3 alerts since" in page
