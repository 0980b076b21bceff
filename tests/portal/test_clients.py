import pytest
from sqlalchemy import select

from portal.models import AllowEntry, AuditEntry, Client


@pytest.fixture
def tree(world):
    msp = world.msp("Acme MSP", waterline="-- reply above --")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    sub = world.client(contoso, "Contoso Berlin")
    admin = world.user(msp, email="ana@acme.example")
    tech = world.user(msp, email="tom@acme.example", role="technician")
    return msp, contoso, sub, admin, tech


@pytest.fixture
def signed_in(browser, tree):
    browser.sign_in("ana@acme.example")
    return browser


def test_tree_lists_the_whole_tree_indented(signed_in):
    body = signed_in.get("/clients").get_data(as_text=True)
    assert body.index("Acme MSP") < body.index("Contoso") < body.index("Contoso Berlin")
    assert 'class="indent d2"' in body


def test_tree_filter_is_an_htmx_fragment_keeping_ancestors(signed_in):
    resp = signed_in.hx_get("/clients?q=berlin")
    body = resp.get_data(as_text=True)
    assert "<html" not in body and "Contoso Berlin" in body and "Acme MSP" in body
    assert "HX-Request" in resp.headers["Vary"]
    assert "No client matches" in signed_in.hx_get("/clients?q=zzz").get_data(as_text=True)


def test_create_sub_client_normalises_the_allow_list_and_records_audit(db, signed_in, tree):
    msp = tree[0]
    resp = signed_in.post("/clients/new", {
        "name": "  Fabrikam   Ltd ", "code": "fab", "parent_id": msp.id,
        "allow": "Fabrikam.COM\n@bücher.example, CEO@Gmail.com", "waterline": "Mit freundlichen Grüßen",
        "timezone": "Europe/Berlin",
    })
    assert resp.status_code == 303
    client = db.session.scalar(select(Client).where(Client.name == "Fabrikam Ltd"))
    assert client.code == "FAB" and client.parent_id == msp.id and client.msp_id == msp.id
    assert sorted(e.value for e in client.allow_entries) == ["ceo@gmail.com", "fabrikam.com", "xn--bcher-kva.example"]
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_id == client.id))
    assert entry.action == "created" and entry.actor_label == "ana@acme.example"
    assert entry.changes["waterline"] == [None, "Mit freundlichen Grüßen"]
    page = signed_in.get(f"/clients/{client.id}").get_data(as_text=True)
    assert "ana@acme.example" in page and "created" in page and "Mit freundlichen Grüßen" in page


def test_htmx_create_with_errors_returns_the_form_fragment_with_422_and_field_messages(db, signed_in, tree):
    msp = tree[0]
    resp = signed_in.post("/clients/new", {
        "name": "Contoso", "code": "9x", "parent_id": msp.id, "allow": "contoso.com\nnot a domain!", "timezone": "Mars/Base",
    }, htmx=True)
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "<html" not in body and 'id="client-form"' in body
    assert "not a domain!" in body and "Mars/Base is not a time zone" in body and "code is 1 to 20" in body
    assert db.session.scalar(select(Client).where(Client.code == "9X")) is None


def test_an_allow_entry_another_client_holds_is_reported_by_name(db, signed_in, tree):
    resp = signed_in.post("/clients/new", {"name": "Rival", "parent_id": tree[0].id, "allow": "CONTOSO.com"})
    assert resp.status_code == 422
    assert "contoso.com is already on the allow-list of Contoso" in resp.get_data(as_text=True)
    assert db.session.scalar(select(Client).where(Client.name == "Rival")) is None


def test_htmx_create_success_redirects_with_hx_redirect(db, signed_in, tree):
    resp = signed_in.post("/clients/new", {"name": "Northwind", "parent_id": tree[0].id}, htmx=True)
    client = db.session.scalar(select(Client).where(Client.name == "Northwind"))
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == f"/clients/{client.id}"


def test_edit_records_only_what_changed(db, signed_in, tree):
    contoso = tree[1]
    resp = signed_in.post(f"/clients/{contoso.id}/edit", {
        "name": "Contoso", "parent_id": tree[0].id, "allow": "contoso.com\ncontoso.de", "waterline": "Best regards",
    })
    assert resp.status_code == 303
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.record_id == contoso.id)
                               .order_by(AuditEntry.id.desc())).first()
    assert entry.action == "updated"
    assert set(entry.changes) == {"allow-list", "waterline"}
    assert entry.changes["allow-list"] == [["contoso.com"], ["contoso.com", "contoso.de"]]


def test_moving_a_client_below_its_own_sub_client_is_refused(db, signed_in, tree):
    msp, contoso, sub = tree[:3]
    resp = signed_in.post(f"/clients/{contoso.id}/edit", {"name": "Contoso", "parent_id": sub.id})
    assert resp.status_code == 422  # the choice is not even offered
    db.session.expire_all()
    assert db.session.get(Client, contoso.id).parent_id == msp.id


def test_effective_settings_show_where_they_come_from(signed_in, tree):
    sub = tree[2]
    body = signed_in.get(f"/clients/{sub.id}").get_data(as_text=True)
    assert "-- reply above --" in body and "inherited from" in body and "Acme MSP" in body


def test_disable_and_enable_are_recorded_and_shown(db, signed_in, tree):
    contoso, sub = tree[1], tree[2]
    resp = signed_in.post(f"/clients/{contoso.id}/disable", htmx=True)
    assert resp.headers["HX-Redirect"] == f"/clients/{contoso.id}"
    assert "Disabled because Contoso is disabled" in signed_in.get(f"/clients/{sub.id}").get_data(as_text=True)
    assert "Disabled via Contoso" in signed_in.get("/clients").get_data(as_text=True)
    signed_in.post(f"/clients/{contoso.id}/enable")
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_id == contoso.id)
                                 .order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["disabled", "enabled"]


def test_the_msp_itself_cannot_be_disabled(db, signed_in, tree):
    msp = tree[0]
    signed_in.post(f"/clients/{msp.id}/disable")
    db.session.expire_all()
    assert db.session.get(Client, msp.id).disabled is False
    assert "cannot be disabled" in signed_in.get(f"/clients/{msp.id}").get_data(as_text=True)


def test_msp_reference_prefix_is_editable_and_validated(db, signed_in, tree):
    msp = tree[0]
    bad = signed_in.post(f"/clients/{msp.id}/edit", {"name": "Acme MSP", "reference_prefix": "t-1"})
    assert bad.status_code == 422 and "reference prefix" in bad.get_data(as_text=True)
    signed_in.post(f"/clients/{msp.id}/edit", {"name": "Acme MSP", "code": "ACME", "reference_prefix": "acme",
                                               "waterline": "-- reply above --"})
    db.session.expire_all()
    assert db.session.get(Client, msp.id).reference_prefix == "ACME"


def test_history_is_paginated(db, signed_in, tree):
    contoso = tree[1]
    for i in range(25):
        signed_in.post(f"/clients/{contoso.id}/edit", {"name": "Contoso", "parent_id": tree[0].id,
                                                         "allow": "contoso.com", "waterline": f"line {i}"})
    page1 = signed_in.get(f"/clients/{contoso.id}").get_data(as_text=True)
    assert "line 24" in page1 and "Page 1 of 2" in page1
    page2 = signed_in.hx_get(f"/clients/{contoso.id}/history?page=2").get_data(as_text=True)
    assert "<html" not in page2 and "line 3" in page2 and "line 24" not in page2


def test_technician_reads_but_cannot_change_configuration(make_browser, db, tree):
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    contoso = tree[1]
    assert tech.get(f"/clients/{contoso.id}").status_code == 200
    assert tech.get("/clients/new").status_code == 403
    assert tech.get(f"/clients/{contoso.id}/edit").status_code == 403
    assert tech.post(f"/clients/{contoso.id}/edit", {"name": "Hacked"}).status_code == 403
    assert tech.post(f"/clients/{contoso.id}/disable").status_code == 403
    db.session.expire_all()
    assert db.session.get(Client, contoso.id).name == "Contoso"
    assert "Add a client" not in tech.get("/clients").get_data(as_text=True)


def test_allow_entries_are_stored_scoped_to_the_msp(db, tree):
    msp = tree[0]
    entries = db.session.scalars(select(AllowEntry)).all()
    assert entries and all(e.msp_id == msp.id for e in entries)
