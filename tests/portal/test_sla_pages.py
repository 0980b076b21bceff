"""Settings › Service levels and the places that choose a policy (client, route), through the
pages: the policy form's errors by field, another MSP's policy refused, deleting asks first and
says who used it."""

import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Mailbox, Route, SlaPolicy
from portal.services import commit, sla

GOLD = {"name": "Gold", "timezone": "Europe/Berlin", "business_hours": {"mon": [["08:00", "17:00"]]},
        "targets": {"high": {"response": 60}}}


def policy_form(**values):
    data = {"name": "Office", "timezone": "Europe/Berlin", "holidays": "2026-12-25", "warning_percent": "80",
            **{f"hours_{d}": "08:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")},
            "hours_sat": "", "hours_sun": "", "high_response_hours": "1", "high_response_minutes": "30"}
    return {**data, **values}


def test_an_admin_creates_and_changes_a_policy_and_each_wrong_field_is_named(admin, msp):
    assert "No SLA policies yet" in admin.get("/settings/service-levels").get_data(as_text=True)
    resp = admin.post("/settings/service-levels/new", policy_form(hours_tue="9 to 5", normal_resolution_minutes="99"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "&#39;9 to 5&#39; is not a span" in page
    assert 'id="normal_resolution-error"' in page
    resp = admin.post("/settings/service-levels/new", policy_form(timezone="", hours_mon="08:00-12:00, 11:00-17:00"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "Choose the time zone" in page
    assert admin.post("/settings/service-levels/new", policy_form()).status_code == 303
    policy = db.session.scalar(select(SlaPolicy).where(SlaPolicy.msp_id == msp.id))
    assert policy.targets == {"high": {"response": 90}} and policy.business_hours["fri"] == [["08:00", "17:00"]]
    page = admin.get(f"/settings/service-levels/{policy.id}").get_data(as_text=True)
    assert 'value="08:00-17:00"' in page and 'name="high_response_minutes" value="30"' in page
    assert admin.post(f"/settings/service-levels/{policy.id}", policy_form(name="Office hours")).status_code == 303
    db.session.expire_all()
    assert db.session.get(SlaPolicy, policy.id).name == "Office hours"


def test_a_client_chooses_a_policy_or_inherits_and_the_form_says_what(admin, world, msp):
    gold = sla.save_policy(msp.id, GOLD, None)
    contoso = world.client(msp, "Contoso")
    berlin = world.client(contoso, "Contoso Berlin")
    commit()
    form = {"name": "Contoso", "code": "", "parent_id": str(msp.id), "allow": "", "waterline": "", "timezone": "",
            "sla_policy_id": str(gold.id)}
    assert admin.post(f"/clients/{contoso.id}/edit", form).status_code == 303
    db.session.expire_all()
    assert db.session.get(Client, contoso.id).sla_policy_id == gold.id
    page = admin.get(f"/clients/{berlin.id}/edit").get_data(as_text=True)
    assert "Inherit: Gold (from Contoso)" in page and "Open tickets keep the one they have" in page
    assert "inherited from" in admin.get(f"/clients/{berlin.id}").get_data(as_text=True)


def test_another_msps_policy_is_no_choice_on_a_route(admin, world, msp):
    box = world.mailbox(msp, routes=[{"name": "Everything else", "client": msp, "fallback": True}])
    other = world.msp("Other MSP")
    theirs = sla.save_policy(other.id, {**GOLD, "name": "Theirs"}, None)
    ours = sla.save_policy(msp.id, GOLD, None)
    commit()
    route = box.routes[0]
    form = {"name": "Everything else", "fallback": "y", "client_id": str(msp.id), "acknowledge": "y",
            "enabled": "y", "recipients": "", "senders": "", "subject_keywords": "", "attachment_types": "",
            "default_status": "", "default_priority": "", "default_type": ""}
    resp = admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", {**form, "sla_policy_id": str(theirs.id)})
    assert resp.status_code == 422
    assert admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", {**form, "sla_policy_id": str(ours.id)}
                      ).status_code == 303
    db.session.expire_all()
    assert db.session.get(Route, route.id).sla_policy_id == ours.id
    assert db.session.get(Mailbox, box.id).sla_policy_id is None


def test_deleting_asks_first_and_says_who_used_it(admin, world, msp):
    gold = sla.save_policy(msp.id, GOLD, None)
    contoso = world.client(msp, "Contoso")
    sla.choose(contoso, gold, None, msp.id)
    commit()
    listing = admin.get("/settings/service-levels").get_data(as_text=True)
    assert re.search(r'hx-confirm="Delete the SLA policy Gold\? It is used by 1 client\.', listing)
    asked = admin.post(f"/settings/service-levels/{gold.id}/delete", {}, confirmed=False)
    assert asked.status_code == 200 and "Delete this SLA policy" in asked.get_data(as_text=True)
    assert db.session.get(SlaPolicy, gold.id) is not None
    done = admin.post(f"/settings/service-levels/{gold.id}/delete", {})
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(SlaPolicy, gold.id) is None and db.session.get(Client, contoso.id).sla_policy_id is None
