"""An LMTP mailbox in the portal: the form without server or password, the listener and a Postfix
example on its page, "Test connection" saying whether the listener answers (or that there is
nothing to test), activation without a server."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox
from tests.conftest import free_port
from tests.portal.test_mailbox_forms import form
from tests.workers.test_lmtp import listening


def lmtp_form(msp, **changes):
    return form(msp, protocol="lmtp", host="imap.typed-before.example", username="typed", password="typed-pw",
                **changes)


def test_an_lmtp_mailbox_needs_no_server_and_shows_its_listener_and_a_postfix_example(app, admin, msp, redis):
    app.config["TIDEMARK_LMTP_LISTEN"] = "unix:/run/tidemark/lmtp.sock"
    page = admin.get("/mailboxes/new").get_data(as_text=True)
    assert '<option value="lmtp">LMTP (pushed by your mail server)</option>' in page
    resp = admin.post("/mailboxes/new", lmtp_form(msp))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = db.session.scalar(select(Mailbox))
    # What was typed before switching to LMTP is not kept: no server, login or password.
    assert (box.protocol, box.host, box.username, box.password_encrypted, box.after_action) == (
        "lmtp", "", "", None, "keep")
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "none: mail is pushed by your mail server over LMTP" in page
    assert '<dd class="lmtp-listen">unix:/run/tidemark/lmtp.sock</dd>' in page
    assert "support@acme.example  lmtp:unix:/run/tidemark/lmtp.sock" in page
    assert "help@acme.example  lmtp:unix:/run/tidemark/lmtp.sock" in page  # its aliases too
    assert "After processing" not in page
    assert "LMTP, pushed by your mail server" in admin.get("/mailboxes").get_data(as_text=True)
    edit = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert '<option selected value="lmtp">' in edit


def test_test_connection_says_whether_the_listener_answers(app, admin, msp, redis):
    assert admin.post("/mailboxes/new", lmtp_form(msp)).status_code == 303
    box = db.session.scalar(select(Mailbox))
    app.config["TIDEMARK_LMTP_LISTEN"] = None
    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert "Nothing to test here: an LMTP mailbox receives the mail your own mail server pushes" in answer
    nobody = f"127.0.0.1:{free_port()}"
    app.config["TIDEMARK_LMTP_LISTEN"] = nobody
    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert f"The LMTP listener at {nobody} does not answer" in answer
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).last_test_ok is False
    with listening(app) as listener:
        app.config["TIDEMARK_LMTP_LISTEN"] = "%s:%d" % listener.address[:2]
        answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
        assert f"The LMTP listener at {app.config['TIDEMARK_LMTP_LISTEN']} answers" in answer
        # The form's test, before saving, asks the same listener.
        check = admin.post(f"/mailboxes/{box.id}/check", lmtp_form(msp), htmx=True).get_data(as_text=True)
        assert "answers" in check
    # Tested: it may be activated without any server.
    resp = admin.post(f"/mailboxes/{box.id}/activate", {}, htmx=True)
    assert resp.status_code in (200, 204, 303), resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "active"
