"""Nothing an MSP admin does tells them whether an address is used in another MSP (issue #13):
an invitation, a new mailbox and the configuration import answer the same for an address that
is free and for one that another MSP uses."""

import io
import re

import pytest
from sqlalchemy import func, select

from portal.models import Mailbox, User
from portal.models.base import utcnow
from portal.services import commit
from portal.services import users as user_svc
from portal.services.mailboxes import ADDRESS_CLAIMED
from tests.portal.test_mailbox_forms import form as mailbox_form

LINK = re.compile(r'value="(http://[^"]+/invitation/[^"]+)"')


@pytest.fixture
def two(world):
    acme = world.msp("Acme MSP")
    world.user(acme, email="ana@acme.example")
    beta = world.msp("Beta MSP")
    world.user(beta, email="eve@beta.example")
    return acme, beta


@pytest.fixture
def eve(make_browser, two):
    b = make_browser()
    b.sign_in("eve@beta.example")
    return b


def neutral(body: str, address: str) -> str:
    """The answer without what differs anyway: the address typed, ids, tokens and links."""
    body = body.replace(address, "ADDRESS")
    return re.sub(r"/users/\d+|/invitation/[^\"']+|value=\"[^\"]*\"|\"X-CSRFToken\": \"[^\"]+\"", "", body)


def test_inviting_a_used_address_looks_like_inviting_a_free_one(db, eve, two):
    free = eve.post("/users/invite", {"email": "new@else.example", "name": "N", "role": "technician"}, htmx=True)
    used = eve.post("/users/invite", {"email": "ana@acme.example", "name": "N", "role": "technician"}, htmx=True)
    assert used.status_code == free.status_code == 200, used.get_data(as_text=True)
    assert neutral(used.get_data(as_text=True), "ana@acme.example") == \
        neutral(free.get_data(as_text=True), "new@else.example")
    # Ana keeps her one account; Beta's list shows her as invited, like anyone who has not answered.
    accounts = db.session.scalars(select(User).where(User.email == "ana@acme.example").order_by(User.id)).all()
    assert [(u.msp_id, user_svc.user_state(u)) for u in accounts] == [(two[0].id, "active"), (two[1].id, "invited")]


def test_the_invited_person_is_told_and_keeps_their_account(db, eve, make_browser, two):
    resp = eve.post("/users/invite", {"email": "ana@acme.example", "name": "", "role": "admin"}, htmx=True)
    link = LINK.search(resp.get_data(as_text=True)).group(1)
    guest = make_browser()
    page = guest.get("/" + link.split("://", 1)[1].split("/", 1)[1]).get_data(as_text=True)
    assert "already has a Tidemark account" in page and 'name="password"' not in page
    ana = make_browser()
    assert ana.sign_in("ana@acme.example").status_code == 302
    assert db.session.scalar(select(User).where(User.email == "ana@acme.example", User.msp_id == two[1].id)).disabled \
        is False  # nothing else happened to the invitation: Beta may withdraw it as any other


def test_a_mailbox_may_be_drafted_with_any_address(db, world, eve, two):
    acme, beta = two
    theirs = world.mailbox(acme, address="support@acme.example", status="active")
    resp = eve.post("/mailboxes/new", mailbox_form(beta, status="draft"))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Mailbox)
                             .where(Mailbox.address == "support@acme.example")) == 2
    assert db.session.get(Mailbox, theirs.id).status == "active"


@pytest.mark.parametrize("claimer_in", ["other msp", "own msp"])
def test_only_an_active_tested_mailbox_claims_its_address(db, world, eve, two, claimer_in):
    acme, beta = two
    claimer = world.mailbox(acme if claimer_in == "other msp" else beta, address="support@acme.example",
                            routes=[{"name": "All", "client": acme if claimer_in == "other msp" else beta,
                                     "fallback": True}], status="active")
    mine = world.mailbox(beta, address="support@acme.example",
                         routes=[{"name": "All", "client": beta, "fallback": True}])
    claimer.last_test_ok = mine.last_test_ok = True
    mine.last_test_at = utcnow()  # activation needs a successful test of the saved settings
    commit()
    resp = eve.post(f"/mailboxes/{mine.id}/activate", htmx=True)
    assert resp.status_code == 200
    page = eve.get(f"/mailboxes/{mine.id}").get_data(as_text=True)
    assert ADDRESS_CLAIMED in page and "Acme" not in page.split("<main", 1)[-1].split("</main>")[0]
    db.session.expire_all()
    assert db.session.get(Mailbox, mine.id).status == "draft"
    # A claimer whose last test failed claims nothing.
    claimer = db.session.get(Mailbox, claimer.id)
    claimer.last_test_ok = False
    commit()
    eve.post(f"/mailboxes/{mine.id}/activate", htmx=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, mine.id).status == "active"


def upload(browser, text):
    return browser.post("/settings/configuration/import",
                        {"action": "preview", "file": (io.BytesIO(text.encode()), "c.yaml")},
                        content_type="multipart/form-data")


def test_the_import_preview_answers_the_same_for_used_and_free_addresses(db, world, eve, two):
    acme, beta = two
    world.mailbox(acme, address="support@acme.example", status="active")
    answers = []
    for user, box in (("ana@acme.example", "support@acme.example"), ("nia@else.example", "desk@else.example")):
        text = (f"users:\n  - {{email: {user}, client: Beta MSP}}\n"
                f"mailboxes:\n  - {{address: {box}, client: Beta MSP, host: 127.0.0.1, username: u}}\n")
        resp = upload(eve, text)
        body = resp.get_data(as_text=True)
        assert resp.status_code == 200 and "another MSP" not in body, body
        answers.append(neutral(neutral(body, user), box))
    assert answers[0] == answers[1]


def test_the_portal_import_invites_new_users_instead_of_setting_their_password(db, eve, two):
    resp = upload(eve, "users:\n  - {email: nia@else.example, client: Beta MSP, password: long enough pw}\n")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "New and invited users are not given a password here" in body, body
    resp = eve.post("/settings/configuration/import", {"action": "apply", "file": (
        io.BytesIO(b"users:\n  - {email: ana@acme.example, client: Beta MSP, role: admin}\n"), "c.yaml")},
        content_type="multipart/form-data")
    assert resp.status_code in (200, 303), resp.get_data(as_text=True)
    invited = db.session.scalar(select(User).where(User.email == "ana@acme.example", User.msp_id == two[1].id))
    assert user_svc.invitation_pending(invited) and invited.role == "admin"


def test_the_command_line_says_plainly_what_is_in_the_way(app, db, world, two):
    runner = app.test_cli_runner()
    taken = runner.invoke(args=["users", "create-admin", "ana@acme.example", "--msp", "Beta MSP",
                                "--password", "long enough pw"])
    assert taken.exit_code == 1 and "already has an account, in another MSP" in taken.output, taken.output
    world.mailbox(two[0], address="desk@shared.example")
    world.mailbox(two[1], address="desk@shared.example")
    both = runner.invoke(args=["mail", "test-connection", "desk@shared.example"])
    assert both.exit_code == 1 and "Several mailboxes use the address desk@shared.example" in both.output
