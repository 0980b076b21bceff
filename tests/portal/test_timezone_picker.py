"""One time zone picker for a client and for My settings: a list of the system's zone names,
validated against it."""

import re

from portal.extensions import db
from portal.models import Client


def _picker(body: str) -> str:
    found = re.search(r'<select id="timezone" name="timezone"[^>]*>(.*?)</select>', body, re.S)
    assert found, "no time zone list"
    return found.group(1)


def test_the_client_form_and_my_settings_offer_the_same_list(admin, world, msp):
    client_form = _picker(admin.get("/clients/new").get_data(as_text=True))
    account = _picker(admin.get("/account").get_data(as_text=True))
    assert '<option value="Europe/Berlin">Europe/Berlin</option>' in client_form
    zones = re.compile(r'<option value="([^"]+)"')
    assert zones.findall(client_form) == zones.findall(account) and len(zones.findall(account)) > 300
    assert client_form.index('<option value="" selected>As the client above') == \
        client_form.index("<option")  # empty (inherited) first and chosen


def test_a_clients_zone_is_picked_kept_and_checked(admin, world, msp):
    resp = admin.post("/clients/new", {"name": "Berlin office", "parent_id": msp.id, "timezone": "Europe/Berlin"})
    assert resp.status_code == 303
    client = db.session.query(Client).filter_by(name="Berlin office").one()
    assert client.timezone == "Europe/Berlin"
    form = _picker(admin.get(f"/clients/{client.id}/edit").get_data(as_text=True))
    assert '<option value="Europe/Berlin" selected>' in form
    bad = admin.post(f"/clients/{client.id}/edit", {"name": "Berlin office", "parent_id": msp.id,
                                                    "timezone": "Berlin"}, htmx=True)
    body = bad.get_data(as_text=True)
    assert bad.status_code == 422 and "Berlin is not a time zone. Pick one from the list" in body
    assert 'aria-describedby="timezone-help timezone-error" aria-invalid="true"' in body
