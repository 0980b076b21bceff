"""`flask mail explain` and `flask mail ingest`: JSON Lines a script can read."""

import json

from tests.mailfactory import email
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

EXPLAIN_KEYS = {"file", "message_id", "in_reply_to", "references", "subject", "from", "to", "cc", "date",
                "auto_generated", "auto_reason", "bounce", "bounced_recipients", "out_of_office", "priority", "text",
                "visible_text", "html_safe", "attachments", "fingerprints", "refs", "defects"}


def lines(output):
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_explain_reads_a_directory_of_any_file_names(app, tmp_path):
    tmp_path = tmp_path / "mail"
    tmp_path.mkdir()
    (tmp_path / "a.eml").write_bytes(email(subject="[T-7] Printer", body="Hi\n\nBest regards\nAl"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "no-extension").write_bytes(b"\xff\xfe garbage")
    result = app.test_cli_runner().invoke(args=["mail", "explain", "--waterline", "Best regards", str(tmp_path)])
    assert result.exit_code == 0, result.output
    first, second = lines(result.output)
    assert EXPLAIN_KEYS <= set(first) and EXPLAIN_KEYS <= set(second)
    assert first["refs"]["subject"] == ["T-7"] and first["visible_text"].strip() == "Hi"
    assert second["file"].endswith("no-extension") and isinstance(second["defects"], list)


def test_ingest_prints_one_line_per_message_and_reads_stdin(app, world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.mailbox(msp)
    runner = app.test_cli_runner()
    raw = email()
    first = runner.invoke(args=["mail", "ingest", "--mailbox", "support@acme.example", "-"], input=raw)
    again = runner.invoke(args=["mail", "ingest", "--mailbox", "support@acme.example", "-"], input=raw)
    one, two = lines(first.output)[0], lines(again.output)[0]
    assert {k: one[k] for k in ("file", "outcome", "ticket", "client", "status")} == {
        "file": "-", "outcome": "created", "ticket": "T-1", "client": "Contoso", "status": "new"}
    assert one["body"].strip() == "It burns." and one["trace"]
    assert two["outcome"] == "duplicate" and two["ticket"] is None and two["body"] is None


def test_ingest_into_an_unknown_mailbox_says_so(app):
    result = app.test_cli_runner().invoke(args=["mail", "ingest", "--mailbox", "nobody@x.example", "-"], input=b"")
    assert result.exit_code == 1 and "there is no mailbox nobody@x.example" in result.output


def test_reprocess_by_raw_id(app, world):
    msp = world.msp("Acme MSP")
    box = world.mailbox(msp)
    first = world.deliver(box, email())
    result = app.test_cli_runner().invoke(args=["mail", "reprocess", str(first.message.raw_message_id)])
    out = lines(result.output)[0]
    assert out["ticket"] == "T-1" and "re-processed" in out["trace"][-1]


# --- with jobs synchronous, the mail a command causes is sent before it returns ------------------


def _outgoing_to(app, smtp_server, world):
    from portal.services import commit
    from portal.outbound import servers as outbound_svc

    outbound_svc.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                                   "from": "noreply@acme.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp)
    commit()
    return box


def _acknowledgement():
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Message

    db.session.expire_all()
    return db.session.scalar(select(Message).where(Message.direction == "out"))


def test_ingest_sends_the_acknowledgement_before_it_returns_when_jobs_are_synchronous(app, world, smtp_server):
    assert app.config["TIDEMARK_JOBS_SYNC"]
    _outgoing_to(app, smtp_server, world)
    result = app.test_cli_runner().invoke(args=["mail", "ingest", "--mailbox", "support@acme.example", "-"],
                                          input=email(sender="alice@contoso.com", message_id="<c1@contoso.com>"))
    assert result.exit_code == 0, result.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"]]
    assert smtp_server.last().message["In-Reply-To"] == "<c1@contoso.com>"
    ack = _acknowledgement()
    assert ack.details["event"] == "ticket_created" and ack.delivery == "sent"


def test_reprocess_sends_the_acknowledgement_before_it_returns_when_jobs_are_synchronous(app, world, smtp_server):
    from portal.extensions import db
    from portal.inbound.fetch import store_raw
    from portal.services import commit

    box = _outgoing_to(app, smtp_server, world)
    stored = store_raw(box, email(sender="alice@contoso.com"), server_id="kept-1", folder="INBOX")
    commit()  # kept but not decided, as after a crash
    result = app.test_cli_runner().invoke(args=["mail", "reprocess", str(stored.id)])
    assert result.exit_code == 0, result.output
    assert lines(result.output)[0]["outcome"] == "created"
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"]]
    assert _acknowledgement().delivery == "sent"
    db.session.rollback()
