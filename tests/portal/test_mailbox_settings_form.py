"""Issue #17's mailbox settings on the mailbox form (accept only allowed senders under New
tickets, the largest email under Fetching, embedded images under Replies) and an MSP's
retention page."""

import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Client, Mailbox
from tests.portal.test_mailbox_forms import form


def _section_of(page: str, field: str) -> str:
    """The key of the <details> section the field sits in."""
    at = page.index(f'name="{field}"')
    return re.findall(r'<details[^>]*data-section="([a-z]+)"', page[:at])[-1]


def test_the_three_settings_are_saved_shown_and_audited(admin, msp):
    assert admin.post("/mailboxes/new", form(msp)).status_code == 303
    box = db.session.scalar(select(Mailbox))
    assert (box.accept_only_allowed, box.max_message_size, box.embed_images) == (False, None, "cid")
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", accept_only_allowed="y",
                                                         max_message_size="15", embed_images="inline"))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert (box.accept_only_allowed, box.max_message_size, box.embed_images) == (True, 15 * 2**20, "inline")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "updated")).one()
    assert entry.changes == {"accept_only_allowed": [False, True], "max_message_size": [None, 15 * 2**20],
                             "embed_images": ["cid", "inline"]}
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert re.search(r'name="accept_only_allowed"[^>]*checked|checked[^>]*name="accept_only_allowed"', page)
    assert re.search(r'name="max_message_size"[^>]*value="15"|value="15"[^>]*name="max_message_size"', page)
    assert re.search(r'<option selected value="inline">|<option value="inline" selected', page)
    assert "up to 15 MB" in page and "only allowed senders" in page and "images embedded" in page
    # Emptied: the installation's size again.
    admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", max_message_size=""))
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).max_message_size is None


def test_the_settings_sit_in_their_sections(admin, msp):
    page = admin.get("/mailboxes/new").get_data(as_text=True)
    assert _section_of(page, "max_message_size") == "fetching"
    assert _section_of(page, "accept_only_allowed") == "tickets"
    assert _section_of(page, "embed_images") == "replies"


def test_wrong_values_are_refused_next_to_their_fields(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, max_message_size="5000"))
    assert resp.status_code == 422
    assert "The largest email is from 1 KB to 200 MB" in resp.get_data(as_text=True)
    assert admin.post("/mailboxes/new", form(msp, embed_images="gif")).status_code == 422
    assert db.session.scalar(select(Mailbox)) is None


def test_an_msp_admin_sets_retention_and_sees_it_in_the_history(admin, msp):
    page = admin.get("/settings/retention")
    assert page.status_code == 200 and "keep for ever" in page.get_data(as_text=True)
    resp = admin.post("/settings/retention", {"retention_raw_days": "365", "retention_unprocessed_days": "10"})
    assert resp.status_code == 422 and "from 30 to 3650" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Client, msp.id).retention_unprocessed_days is None
    resp = admin.post("/settings/retention", {"retention_raw_days": "365", "retention_unprocessed_days": "60"})
    assert resp.status_code in (200, 303)
    db.session.expire_all()
    saved = db.session.get(Client, msp.id)
    assert (saved.retention_raw_days, saved.retention_unprocessed_days) == (365, 60)
    page = admin.get("/settings/retention").get_data(as_text=True)
    assert 'value="365"' in page and "retention changed" in page
