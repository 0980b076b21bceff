from __future__ import annotations

from flask import Blueprint, abort, current_app, g, render_template

from portal.auth.access import admin_required
from portal.services import commit
from portal.services import mailboxes as svc

bp = Blueprint("mailboxes", __name__, url_prefix="/mailboxes")


@bp.get("")
def index():
    return render_template("mailboxes/index.html", rows=svc.mailbox_health(g.msp_id))


@bp.post("/<int:mailbox_id>/test")
@admin_required
def test_connection(mailbox_id: int):
    """Try the server now; the answer shows in place and is kept on the mailbox."""
    mailbox = svc.get_mailbox(g.msp_id, mailbox_id)
    if mailbox is None:
        abort(404)
    result = svc.check_connection(mailbox, current_app.config["TIDEMARK_ENCRYPTION_KEY"],
                                  ca_file=current_app.config["TIDEMARK_CA_FILE"])
    commit()
    return render_template("mailboxes/_test_result.html", box=mailbox, result=result)
