"""History lines say what people saw on the form: a field's label, a client's name (never another
MSP's), not `client_id → 1`."""

import html
import re

from portal.services import audit, commit
from portal.services.mailboxes import save_mailbox


def _rows(body: str) -> list[tuple[str, str, str]]:
    found = re.findall(r'<tr><th scope="row">(.*?)</th>\s*<td class="old">(.*?)</td>\s*<td aria-hidden="true">→</td>'
                       r'\s*<td class="new">(.*?)</td></tr>', body)
    return [tuple(html.unescape(x) for x in row) for row in found]


def test_a_mailbox_moved_to_another_client_shows_labels_and_names(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    fabrikam = world.client(msp, "Fabrikam")
    box = world.mailbox(contoso, poll_interval=60)
    save_mailbox(msp, fabrikam, {"address": box.address, "host": "127.0.0.1", "username": "support",
                                 "poll_interval": 120}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None,
                 mailbox=box)
    commit()
    rows = _rows(admin.get(f"/mailboxes/{box.id}/history").get_data(as_text=True))
    assert ("Client", "Contoso", "Fabrikam") in rows and ("Fetch every (seconds)", "60", "120") in rows, rows
    assert not any(label.endswith("_id") or "_" in label for label, _old, _new in rows), rows


def test_an_id_of_another_msps_client_is_not_named(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    other = world.msp("Other MSP")
    secret = world.client(other, "Their Secret Client")
    box = world.mailbox(contoso)
    audit.record(None, msp.id, "mailbox", box.id, "updated", {"client_id": [secret.id, contoso.id],
                                                              "keep_raw_attachment": [False, True]})
    commit()
    body = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    rows = _rows(body)
    assert ("Client", "a deleted client", "Contoso") in rows, rows
    assert ("Attach the original email (.eml) to new tickets", "no", "yes") in rows
    assert "Their Secret Client" not in body
