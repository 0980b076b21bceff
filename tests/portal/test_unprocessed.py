"""The unprocessed mail pages and the routing check: list, actions with and without htmx,
roles, tenancy, CSRF."""

import re

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditEntry, Message, Ticket
from tests.mailfactory import email


def bcc(world, box, sender="it@newcustomer.example", subject="Need help"):
    return world.deliver(box, email(sender=sender, to=["someone@elsewhere.example"], subject=subject)).message


@pytest.fixture
def admin(browser, bcc_desk):
    browser.sign_in("ann@acme.example")
    return browser


@pytest.fixture
def tech(browser, bcc_desk):
    browser.sign_in("tom@acme.example")
    return browser


def text(resp):
    return resp.get_data(as_text=True)


def test_list_shows_each_waiting_email_with_why_and_the_nav_badge(world, admin, bcc_desk):
    empty = text(admin.get("/unprocessed"))
    assert "All clear" in empty
    bcc(world, bcc_desk[2], subject="Printer at the new office")
    page = text(admin.get("/unprocessed"))
    assert "Printer at the new office" in page and "it@newcustomer.example" in page
    assert "someone@elsewhere.example" in page and "desk@acme.example" in page
    assert "only BCC&#39;d to this mailbox" in page
    assert re.search(r'id="unprocessed-badge"[^>]*>1</span>', page)
    fragment = text(admin.hx_get("/unprocessed"))
    assert "<html" not in fragment and "Printer at the new office" in fragment


def test_list_paginates_newest_first(app, world, admin, bcc_desk):
    app.config["TIDEMARK_PAGE_SIZE"] = 2
    for i in range(3):
        bcc(world, bcc_desk[2], subject=f"case {i}")
    first, last = text(admin.get("/unprocessed")), text(admin.get("/unprocessed?page=2"))
    assert "Page 1 of 2" in first and "case 2" in first and "case 0" not in first
    assert "case 0" in last


def test_detail_shows_the_sanitised_body_and_the_full_trace(world, admin, bcc_desk):
    html = '<p>Hello <b>team</b></p><script>alert(1)</script><img src="x" onerror="alert(2)">'
    message = world.deliver(bcc_desk[2], email(sender="it@newcustomer.example", to=["x@elsewhere.example"],
                                           html=html)).message
    page = text(admin.get(f"/unprocessed/{message.id}"))
    assert "<b>team</b>" in page and "<script>alert(1)" not in page and "onerror" not in page
    assert "How it was decided" in page and "unprocessed: only BCC" in page
    assert "everyone at newcustomer.example" in page and "only it@newcustomer.example" in page
    source = admin.get(f"/unprocessed/{message.id}/source")
    assert source.mimetype == "text/plain" and b"From: it@newcustomer.example" in source.data


def test_pages_carry_no_inline_script_style_or_handlers(world, admin, bcc_desk):
    message = bcc(world, bcc_desk[2])
    for url in ("/unprocessed", f"/unprocessed/{message.id}", "/unprocessed/check", "/unprocessed?show=discarded"):
        page = text(admin.get(url))
        assert " style=" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
        assert not re.search(r"\son[a-z]+=", page), url


def test_assign_makes_the_ticket_and_goes_there(world, admin, bcc_desk):
    _msp, contoso, box = bcc_desk
    message = bcc(world, box)
    resp = admin.post(f"/unprocessed/{message.id}/assign", {"assign-client_id": contoso.id})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/tickets/T-1")
    ticket = db.session.scalar(select(Ticket))
    assert ticket.client_id == contoso.id
    assert "Created T-1 for Contoso" in text(admin.get("/tickets/T-1"))
    assert admin.get(f"/unprocessed/{message.id}").status_code == 404  # no longer waiting


def test_assign_without_a_client_says_so_next_to_the_field(world, admin, bcc_desk):
    message = bcc(world, bcc_desk[2])
    resp = admin.post(f"/unprocessed/{message.id}/assign", {"assign-client_id": "0"}, htmx=True)
    body = text(resp)
    assert resp.status_code == 422 and "<html" not in body
    assert re.search(r'id="assign-client_id-error"[^>]*>\s*<li>Choose one of your clients', body)
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0


def test_append_by_reference_with_htmx_and_an_unknown_reference(world, admin, bcc_desk):
    _msp, _contoso, box = bcc_desk
    world.deliver(box, email(sender="alice@contoso.com", to=["desk@acme.example"]))
    message = bcc(world, box)
    wrong = admin.post(f"/unprocessed/{message.id}/append", {"append-reference": "T-77"}, htmx=True)
    assert wrong.status_code == 422 and "There is no ticket T-77." in text(wrong)
    ok = admin.post(f"/unprocessed/{message.id}/append", {"append-reference": "t-1"}, htmx=True)
    assert ok.status_code == 200 and ok.headers["HX-Redirect"].endswith("/tickets/T-1")
    assert db.session.get(Message, message.id).ticket.reference == "T-1"


def test_teach_places_the_senders_waiting_mail_and_says_how_many(world, admin, bcc_desk):
    _msp, contoso, box = bcc_desk
    message = bcc(world, box, subject="one")
    bcc(world, box, sender="boss@newcustomer.example", subject="two")
    bcc(world, box, sender="x@other.example", subject="three")
    resp = admin.post(f"/unprocessed/{message.id}/teach", {"teach-client_id": contoso.id, "teach-scope": "domain"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/unprocessed")
    page = text(admin.get("/unprocessed"))
    assert "Added newcustomer.example to the allow-list of Contoso. Placed 2 of 2 waiting emails" in page
    assert "three" in page and ">one<" not in page
    assert "newcustomer.example" in text(admin.get(f"/clients/{contoso.id}"))


def test_teach_is_for_admins_technicians_work_the_rest(world, tech, bcc_desk):
    _msp, contoso, box = bcc_desk
    message = bcc(world, box)
    page = text(tech.get(f"/unprocessed/{message.id}"))
    assert "An administrator can put this sender" in page and "Teach and place" not in page
    assert tech.post(f"/unprocessed/{message.id}/teach",
                     {"teach-client_id": contoso.id, "teach-scope": "domain"}).status_code == 403
    assert tech.get("/unprocessed").status_code == 200 and tech.get("/unprocessed/check").status_code == 200
    assert tech.post(f"/unprocessed/{message.id}/assign", {"assign-client_id": contoso.id}).status_code == 303


def test_discard_in_place_offers_undo_and_updates_the_badge(world, admin, bcc_desk):
    msp = bcc_desk[0]
    message = bcc(world, bcc_desk[2], subject="Spammy")
    bcc(world, bcc_desk[2], subject="Keep me")
    resp = admin.post(f"/unprocessed/{message.id}/discard", {"show": "waiting"}, htmx=True)
    body = text(resp)
    assert resp.status_code == 200 and "<html" not in body
    assert "Discarded “Spammy”" in body and "Undo" in body
    assert re.search(r'id="unprocessed-badge"[^>]*hx-swap-oob="true">1</span>', body)
    assert "Keep me" in body and ">Spammy<" not in body
    assert "Spammy" in text(admin.get("/unprocessed?show=discarded"))
    undo = admin.post(f"/unprocessed/{message.id}/restore", {"show": "waiting"}, htmx=True)
    assert ">Spammy<" in text(undo) and db.session.get(Message, message.id).outcome == "unprocessed"
    actions = [e.action for e in db.session.scalars(select(AuditEntry).where(
        AuditEntry.msp_id == msp.id, AuditEntry.record_type == "message").order_by(AuditEntry.id))]
    assert actions == ["discarded", "restored"]


def test_discard_without_javascript_shows_undo_once(world, admin, bcc_desk):
    message = bcc(world, bcc_desk[2], subject="Spammy")
    resp = admin.post(f"/unprocessed/{message.id}/discard", {"show": "detail"})
    assert resp.status_code == 303
    first, second = text(admin.get("/unprocessed")), text(admin.get("/unprocessed"))
    assert "Discarded “Spammy”" in first and "Discarded “Spammy”" not in second
    restored = admin.post(f"/unprocessed/{message.id}/restore", {"show": "detail"})
    assert restored.headers["Location"].endswith(f"/unprocessed/{message.id}")
    assert "waits among the unprocessed mail again" in text(admin.get(restored.headers["Location"]))


def test_rerun_says_why_it_still_waits(world, admin, bcc_desk):
    message = bcc(world, bcc_desk[2])
    resp = admin.post(f"/unprocessed/{message.id}/rerun")
    assert resp.headers["Location"].endswith(f"/unprocessed/{message.id}")
    assert "Still unprocessed: unprocessed: only BCC" in text(admin.get(resp.headers["Location"]))


def test_another_msps_mail_answers_404_and_anonymous_is_sent_to_sign_in(world, make_browser, admin, bcc_desk):
    other = world.msp("Other MSP")
    theirs_box = world.mailbox(other, address="help@other.example")
    theirs = world.deliver(theirs_box, email(to=["x@elsewhere.example"])).message
    assert theirs.outcome == "unprocessed"
    assert admin.get(f"/unprocessed/{theirs.id}").status_code == 404
    for action in ("assign", "append", "rerun", "discard", "restore"):
        assert admin.post(f"/unprocessed/{theirs.id}/{action}").status_code == 404
    assert "help@other.example" not in text(admin.get("/unprocessed"))
    resp = admin.post("/unprocessed/check", {"mailbox_id": theirs_box.id, "sender": "a@b.example"})
    assert resp.status_code == 422
    their_client = world.client(other, "Their Customer")
    ours = bcc(world, bcc_desk[2])
    assert admin.post(f"/unprocessed/{ours.id}/assign", {"assign-client_id": their_client.id}).status_code == 422
    assert admin.post(f"/unprocessed/{ours.id}/teach", {"teach-client_id": their_client.id,
                                                        "teach-scope": "domain"}).status_code == 422
    assert db.session.scalar(select(func.count()).select_from(Ticket).where(Ticket.msp_id == bcc_desk[0].id)) == 0
    assert make_browser().get("/unprocessed").status_code == 302


def test_a_post_without_the_csrf_token_changes_nothing(world, admin, bcc_desk):
    message = bcc(world, bcc_desk[2])
    resp = admin.post(f"/unprocessed/{message.id}/discard", token=False)
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(Message, message.id).outcome == "unprocessed"


def test_routing_check_page_shows_outcome_route_and_trace(world, admin, bcc_desk):
    _msp, _contoso, box = bcc_desk
    page = text(admin.get("/unprocessed/check"))
    assert "desk@acme.example" in page and "Paste or upload a whole email instead" in page
    resp = admin.post("/unprocessed/check", {"mailbox_id": box.id, "sender": "bob@contoso.com",
                                             "to": "someone@elsewhere.example", "subject": "Printer"}, htmx=True)
    body = text(resp)
    assert resp.status_code == 200 and "<html" not in body
    assert "created" in body and "Contoso BCC" in body and "T-1 would be the next reference" in body
    assert "route &#39;Contoso BCC&#39; (wildcard)" in body
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0
    raw = email(sender="x@stranger.example", to=["someone@elsewhere.example"], subject="Pasted").decode()
    pasted = text(admin.post("/unprocessed/check", {"mailbox_id": box.id, "raw": raw}))
    assert "o-unprocessed" in pasted and "Pasted" in pasted


def test_routing_check_names_each_wrong_field(admin, bcc_desk):
    resp = admin.post("/unprocessed/check", {"mailbox_id": bcc_desk[2].id, "sender": "nobody", "to": "nope"}, htmx=True)
    body = text(resp)
    assert resp.status_code == 422
    assert re.search(r'id="sender-error"[^>]*>\s*<li>Type the sender', body)
    assert re.search(r'id="to-error"[^>]*>\s*<li>nope is not an email address', body)


def test_routing_check_reads_an_uploaded_email_byte_for_byte(admin, bcc_desk):
    import io

    box = bcc_desk[2]
    raw = email(sender="x@stranger.example", to=["someone@elsewhere.example"], subject="Caf\xe9 uploaded")
    raw = raw.replace(b"Subject: =?utf-8?q?Caf=C3=A9_uploaded?=", b"Subject: Caf\xe9 uploaded")  # raw 8-bit
    resp = admin.post("/unprocessed/check", {"mailbox_id": box.id, "raw": "ignored when a file is given",
                                             "upload": (io.BytesIO(raw), "mail.eml")},
                      content_type="multipart/form-data")
    body = text(resp)
    assert resp.status_code == 200 and "o-unprocessed" in body and "uploaded" in body
    big = admin.post("/unprocessed/check", {"mailbox_id": box.id, "upload": (io.BytesIO(b"x" * 5_000_001), "big.eml")},
                     content_type="multipart/form-data")
    assert big.status_code == 422 and "over 5 MB" in text(big)
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0
