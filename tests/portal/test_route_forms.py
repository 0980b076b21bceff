"""A mailbox's routes in the browser: add, change, remove, reorder; the clean_routes rules apply."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Mailbox, Route


@pytest.fixture
def contoso(world, msp):
    return world.client(msp, "Contoso")


def route_form(client, **values):
    data = {"name": "", "recipients": "", "senders": "", "subject_keywords": "", "attachment_types": "",
            "client_id": str(client.id), "default_status": "", "default_priority": "", "default_type": "",
            "acknowledge": "y", "enabled": "y", **values}
    return {k: v for k, v in data.items() if v is not None}


def names(box_id):
    db.session.expire_all()
    return [r.name for r in db.session.get(Mailbox, box_id).routes]


def ids(box_id):
    db.session.expire_all()
    return [r.id for r in db.session.get(Mailbox, box_id).routes]


@pytest.fixture
def box(world, msp, contoso):
    return world.mailbox(msp, routes=[
        {"name": "Everything else", "client": msp, "fallback": True},
        {"name": "Contoso", "client": contoso, "recipients": ["contoso@acme.example"]},
        {"name": "Fabrikam", "client": contoso, "recipients": ["fabrikam@acme.example"]},
        {"name": "Partners BCC", "client": contoso, "recipients": ["*"], "senders": ["partner.example"]},
    ])


def test_the_first_route_must_be_the_fallback_and_the_form_says_so(world, admin, msp):
    box = world.mailbox(msp)
    page = admin.get(f"/mailboxes/{box.id}/routes/new").get_data(as_text=True)
    assert "has to be the fallback route" in page
    assert re.search(r'<input[^>]* checked id="fallback"', page)
    resp = admin.post(f"/mailboxes/{box.id}/routes/new", route_form(msp, name="VIP", recipients="vip@acme.example"),
                      htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="fallback-error"' in body and "exactly one fallback" in body
    resp = admin.post(f"/mailboxes/{box.id}/routes/new", route_form(msp, name="Everything else", fallback="y",
                                                                     recipients="typed-before@acme.example"))
    assert resp.status_code == 303 and names(box.id) == ["Everything else"]
    # The fallback takes everything else: conditions typed before ticking it are not kept.
    assert db.session.get(Mailbox, box.id).routes[0].recipients == []


def test_a_route_keeps_every_rule_and_is_audited(admin, box, contoso):
    resp = admin.post(f"/mailboxes/{box.id}/routes/new", route_form(
        contoso, name="Invoices", recipients="billing@acme.example, Accounts@Acme.example", senders="*@vendor.example",
        subject_keywords="invoice\noverdue", attachment_types=".PDF", high_importance_only="y", acknowledge=None,
        acknowledge_cc="y", default_status="open", default_priority="high", default_type="billing"))
    assert resp.status_code == 303
    route = db.session.scalar(select(Route).where(Route.name == "Invoices"))
    assert route.recipients == ["billing@acme.example", "accounts@acme.example"]
    assert (route.senders, route.subject_keywords, route.attachment_types) == (["*@vendor.example"], ["invoice", "overdue"], ["pdf"])
    assert (route.high_importance_only, route.acknowledge, route.acknowledge_cc) == (True, False, True)
    assert (route.default_status, route.default_priority, route.default_type, route.client_id) == ("open", "high", "billing", contoso.id)
    # New exact routes join the exact group, before the wildcard and the fallback.
    assert names(box.id) == ["Contoso", "Fabrikam", "Invoices", "Partners BCC", "Everything else"]
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "route Invoices added"))
    assert entry.changes["senders"] == [None, ["*@vendor.example"]] and entry.actor_label == "ana@acme.example"


@pytest.mark.parametrize("values, field, message", [
    ({"recipients": "*", "senders": ""}, "senders", "A wildcard route needs a sender list"),
    ({"recipients": "*", "senders": "*"}, "senders", "cannot have a wildcard sender"),
    ({"recipients": "*, vip@acme.example", "senders": "x.example"}, "recipients", "* stands alone"),
    ({"recipients": ""}, "recipients", "name the recipients"),
    ({"recipients": "not an address"}, "recipients", "not an address"),
    ({"name": "", "recipients": "a@acme.example"}, "name", "give it a name"),
])
def test_route_rules_come_back_next_to_their_field(admin, box, contoso, values, field, message):
    before = ids(box.id)
    resp = admin.post(f"/mailboxes/{box.id}/routes/new", route_form(contoso, **{"name": "New", **values}), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "<html" not in body
    assert f'id="{field}-error"' in body and message.lower() in body.lower()
    assert ids(box.id) == before


def test_editing_keeps_ids_and_moving_the_fallback_flag_checks_the_old_fallback(admin, box, msp):
    routes = db.session.get(Mailbox, box.id).routes
    contoso = routes[0]
    resp = admin.post(f"/mailboxes/{box.id}/routes/{contoso.id}/edit", route_form(
        msp, name="Contoso Ltd", recipients="contoso@acme.example\nsupport@contoso.example"))
    assert resp.status_code == 303
    db.session.expire_all()
    edited = db.session.get(Route, contoso.id)
    assert edited.name == "Contoso Ltd" and edited.recipients[-1] == "support@contoso.example"
    page = admin.get(f"/mailboxes/{box.id}/routes/{contoso.id}/edit").get_data(as_text=True)
    assert "support@contoso.example" in page
    # Making Contoso the fallback would leave "Everything else" without recipients: refused, said at the top.
    resp = admin.post(f"/mailboxes/{box.id}/routes/{contoso.id}/edit",
                      route_form(msp, name="Contoso Ltd", fallback="y"), htmx=True)
    assert resp.status_code == 422 and "Everything else" in resp.get_data(as_text=True)
    assert db.session.get(Route, contoso.id).fallback is False


def test_removing_routes_asks_first_and_the_fallback_stays_while_others_exist(admin, box):
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert 'hx-confirm="Remove the route Fabrikam?"' in page
    fabrikam, fallback = [r for r in db.session.get(Mailbox, box.id).routes if r.name in ("Fabrikam", "Everything else")]
    assert admin.post(f"/mailboxes/{box.id}/routes/{fabrikam.id}/delete", htmx=True).status_code == 200
    assert "Fabrikam" not in names(box.id)
    admin.post(f"/mailboxes/{box.id}/routes/{fallback.id}/delete")
    assert "Everything else" in names(box.id)
    assert "Not removed" in admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "route Fabrikam removed")) is not None


def test_move_buttons_reorder_within_a_group_and_keep_focus_on_the_moved_route(admin, box):
    contoso, fabrikam, wildcard, fallback = ids(box.id)
    resp = admin.post(f"/mailboxes/{box.id}/routes/order", {"move": f"{fabrikam}:up"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<html" not in body
    assert names(box.id) == ["Fabrikam", "Contoso", "Partners BCC", "Everything else"]
    assert "Moved Fabrikam up to place 1." in body
    # The moved route is first now: its Up button is off, so the focus goes to its Down button.
    assert f'value="{fabrikam}:down" aria-label="Move Fabrikam down"  data-focus' in body
    assert f'value="{fabrikam}:up" aria-label="Move Fabrikam up" disabled' in body
    # A wildcard route cannot move above the exact ones, nor the fallback at all.
    body = admin.post(f"/mailboxes/{box.id}/routes/order", {"move": f"{wildcard}:up"}, htmx=True).get_data(as_text=True)
    assert "stays at place 3" in body and names(box.id)[2] == "Partners BCC"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "routes reordered"))
    assert entry.changes["order"][1] == ["Fabrikam", "Contoso", "Partners BCC", "Everything else"]


def test_a_move_made_without_htmx_comes_back_to_the_page_with_the_moved_routes_button_marked(admin, box):
    """A click before the script has taken the list posts the plain form: the mailbox page it
    comes back to marks the moved route's button, which the script focuses on load."""
    contoso, fabrikam, wildcard, fallback = ids(box.id)
    resp = admin.post(f"/mailboxes/{box.id}/routes/order", {"move": f"{fabrikam}:up"})
    assert resp.status_code in (302, 303)
    # No fragment: a browser applying "#routes" after the script's focus would clear that focus.
    assert resp.headers["Location"].endswith(f"/mailboxes/{box.id}?moved={fabrikam}&direction=up")
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert names(box.id)[0] == "Fabrikam" and "Moved Fabrikam up to place 1." in page
    assert f'value="{fabrikam}:down" aria-label="Move Fabrikam down"  data-focus' in page
    assert page.count("data-focus") == 1
    # Anything else in the address marks nothing.
    page = admin.get(f"/mailboxes/{box.id}?moved={contoso}&direction=sideways").get_data(as_text=True)
    assert "data-focus" not in page


def test_a_dragged_order_is_saved_and_kept_within_the_groups(admin, box):
    contoso, fabrikam, wildcard, fallback = ids(box.id)
    body = admin.post(f"/mailboxes/{box.id}/routes/order", {"order": [fabrikam, contoso, wildcard, fallback]},
                      htmx=True).get_data(as_text=True)
    assert "New order saved." in body and ids(box.id) == [fabrikam, contoso, wildcard, fallback]
    body = admin.post(f"/mailboxes/{box.id}/routes/order", {"order": [fallback, wildcard, fabrikam, contoso]},
                      htmx=True).get_data(as_text=True)
    assert "kept within those groups" in body
    assert ids(box.id) == [fabrikam, contoso, wildcard, fallback]
    body = admin.post(f"/mailboxes/{box.id}/routes/order", {"order": [fabrikam, contoso]}, htmx=True).get_data(as_text=True)
    assert "reload the page" in body and ids(box.id) == [fabrikam, contoso, wildcard, fallback]


def test_routes_of_other_mailboxes_and_msps_answer_404_and_technicians_403(world, make_browser, admin, box, msp):
    other_box = world.mailbox(msp, address="other@acme.example",
                              routes=[{"name": "Other fallback", "client": msp, "fallback": True}])
    foreign = other_box.routes[0].id
    assert admin.get(f"/mailboxes/{box.id}/routes/{foreign}/edit").status_code == 404
    assert admin.post(f"/mailboxes/{box.id}/routes/{foreign}/delete").status_code == 404
    assert admin.post(f"/mailboxes/{box.id}/routes/order", {"move": f"{foreign}:up"}).status_code == 404
    world.user(msp, email="tom@acme.example", role="technician")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    first = ids(box.id)[0]
    assert tom.get(f"/mailboxes/{box.id}/routes/new").status_code == 403
    assert tom.post(f"/mailboxes/{box.id}/routes/order", {"move": f"{ids(box.id)[1]}:up"}).status_code == 403
    assert tom.post(f"/mailboxes/{box.id}/routes/{first}/delete").status_code == 403
    page = tom.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Partners BCC" in page and "Move Contoso" not in page and "draggable" not in page
    stranger_msp = world.msp("Other MSP")
    world.user(stranger_msp, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert eve.get(f"/mailboxes/{box.id}/routes/{first}/edit").status_code == 404
    assert eve.post(f"/mailboxes/{box.id}/routes/order", {"order": ids(box.id)}).status_code == 404


def test_an_active_mailbox_keeps_its_fallback_switched_on(world, admin, box, msp):
    from portal.services import commit

    fallback = next(r for r in db.session.get(Mailbox, box.id).routes if r.fallback)
    contoso = next(r for r in db.session.get(Mailbox, box.id).routes if r.name == "Contoso")
    url = f"/mailboxes/{box.id}/routes/{fallback.id}/edit"
    off = route_form(msp, name="Everything else", fallback="y", enabled=None)
    db.session.get(Mailbox, box.id).status = "active"
    commit()
    resp = admin.post(url, off, htmx=True)
    assert resp.status_code == 422 and "must stay switched on" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Route, fallback.id).enabled is True
    # Other routes may still be switched off while the mailbox is active.
    resp = admin.post(f"/mailboxes/{box.id}/routes/{contoso.id}/edit",
                      route_form(msp, name="Contoso", recipients="contoso@acme.example", enabled=None))
    assert resp.status_code == 303
    db.session.expire_all()
    assert db.session.get(Route, contoso.id).enabled is False
    # A draft mailbox may switch its fallback off (activation then refuses).
    db.session.get(Mailbox, box.id).status = "draft"
    commit()
    assert admin.post(url, off).status_code == 303
    db.session.expire_all()
    assert db.session.get(Route, fallback.id).enabled is False
