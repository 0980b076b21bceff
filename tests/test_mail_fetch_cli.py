"""`flask mail fetch ADDRESS` and `flask mail test-connection ADDRESS` against a real Dovecot, the
acknowledgements through a real SMTP server (aiosmtpd): the command-line contract."""

import json

from sqlalchemy import func, select

from portal import crypto
from portal.extensions import db
from portal.models import Mailbox, RawMessage
from portal.services import commit
from tests.dovecot import unused_port
from tests.mailfactory import email
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

def lines(output):
    return [json.loads(line) for line in output.splitlines() if line.strip().startswith("{")]


def _desk(app, world, smtp_server, dovecot, mail_user, **values):
    """Acme MSP with Contoso and a mailbox on the test Dovecot; mail goes out through aiosmtpd."""
    from portal.outbound import servers as outbound_svc

    app.config["TIDEMARK_CA_FILE"] = str(dovecot.ca_file)
    outbound_svc.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                                   "from": "noreply@acme.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    values = {"status": "active", "protocol": "imap", "security": "none", "host": "127.0.0.1",
              "port": dovecot.port("imap", "none"), "username": mail_user.name, "password": mail_user.password,
              "after_action": "seen", **values}
    return world.mailbox(msp, address="support@acme.example", **values)


def test_fetch_decides_now_prints_a_line_per_message_and_sends_the_acknowledgements(
        app, world, dovecot, mail_user, smtp_server, redis):
    assert app.config["TIDEMARK_JOBS_SYNC"]
    box = _desk(app, world, smtp_server, dovecot, mail_user, poll_interval=3600, skip_windows=["00:00-23:59"])
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    dovecot.deliver(mail_user, email(sender="bob@contoso.com", subject="Scanner", message_id="<s1@contoso.com>"))
    runner = app.test_cli_runner()
    # A skip window all day long and an hour's interval: a person asking now is not held back.
    result = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert result.exit_code == 0, result.output
    first, second = lines(result.output)
    assert {k: first[k] for k in ("outcome", "ticket", "client", "status")} == {
        "outcome": "created", "ticket": "T-1", "client": "Contoso", "status": "new"}
    assert first["body"].strip() == "It burns." and first["trace"] and first["file"].startswith("INBOX/")
    assert second["ticket"] == "T-2"
    # Sent before the command returned, each in reply to its customer's mail.
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["alice@contoso.com", "bob@contoso.com"]
    assert {m.message["In-Reply-To"] for m in smtp_server.messages} == {"<p1@contoso.com>", "<s1@contoso.com>"}
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).last_success_at is not None
    # Again: nothing new on the server, no line, nothing sent twice.
    again = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert again.exit_code == 0 and lines(again.output) == [] and len(smtp_server.messages) == 2
    # The keys of `mail ingest`, exactly: a script reads both commands' lines the same way.
    ingested = runner.invoke(args=["mail", "ingest", "--mailbox", "support@acme.example", "-"],
                             input=email(sender="carol@contoso.com", subject="Monitor"))
    (ingest_line,) = lines(ingested.output)
    assert set(first) == set(second) == set(ingest_line)


def test_a_message_that_cannot_be_decided_has_a_failed_line_with_the_keys_of_ingest(
        app, world, dovecot, mail_user, smtp_server, redis, monkeypatch):
    from portal.inbound import batch

    _desk(app, world, smtp_server, dovecot, mail_user)
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    dovecot.deliver(mail_user, email(sender="bob@contoso.com", subject="Boom", message_id="<b1@contoso.com>"))
    decide = batch.decide

    def failing(stored, ctx, *args):
        if b"Subject: Boom" in stored.raw:
            raise RuntimeError("the decision broke")
        return decide(stored, ctx, *args)

    monkeypatch.setattr(batch, "decide", failing)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert result.exit_code == 0, result.output
    printer, boom = lines(result.output)
    assert printer["outcome"] == "created"
    assert {k: boom[k] for k in ("outcome", "ticket", "client", "status", "body", "trace")} == {
        "outcome": "failed", "ticket": None, "client": None, "status": None, "body": None,
        "trace": ["RuntimeError: the decision broke"]}
    ingested = runner.invoke(args=["mail", "ingest", "--mailbox", "support@acme.example", "-"],
                             input=email(subject="Boom"))
    (ingest_line,) = lines(ingested.output)
    assert ingest_line["outcome"] == "failed" and set(ingest_line) == set(boom)


def test_fetch_from_a_server_that_cannot_be_reached_says_so_and_exits_non_zero(
        app, world, dovecot, mail_user, smtp_server, redis):
    _desk(app, world, smtp_server, dovecot, mail_user, port=unused_port())
    result = app.test_cli_runner().invoke(args=["mail", "fetch", "support@acme.example"])
    assert result.exit_code == 1
    assert "error: " in result.output and "127.0.0.1" in result.output and "Traceback" not in result.output
    assert lines(result.output) == []
    box = db.session.scalar(select(Mailbox))
    db.session.refresh(box)
    assert box.failure_count == 1 and box.last_error  # a fetch like any other: the failure is on the mailbox


def test_fetch_with_a_wrong_password_prints_the_servers_refusal(app, world, dovecot, mail_user, smtp_server, redis):
    box = _desk(app, world, smtp_server, dovecot, mail_user)
    box.password_encrypted = crypto.encrypt(app.config["TIDEMARK_ENCRYPTION_KEY"], "not-the-password")
    commit()
    dovecot.deliver(mail_user, email())
    result = app.test_cli_runner().invoke(args=["mail", "fetch", "support@acme.example"])
    assert result.exit_code == 1 and "authentication failed" in result.output
    assert "not-the-password" not in result.output
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == 0


def test_fetch_refuses_a_draft_or_disabled_mailbox_and_an_unknown_address(
        app, world, dovecot, mail_user, smtp_server, redis):
    box = _desk(app, world, smtp_server, dovecot, mail_user, status="draft")
    dovecot.deliver(mail_user, email())
    runner = app.test_cli_runner()
    draft = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert draft.exit_code == 1 and "is a draft: activate it" in draft.output
    box.status = "disabled"
    commit()
    disabled = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert disabled.exit_code == 1 and "is disabled: enable it" in disabled.output
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == 0
    unknown = runner.invoke(args=["mail", "fetch", "nobody@acme.example"])
    assert unknown.exit_code == 1 and "there is no mailbox nobody@acme.example" in unknown.output


def test_fetch_waits_for_no_one_while_another_fetch_holds_the_mailbox(
        app, world, dovecot, mail_user, smtp_server, redis):
    from portal.inbound.health import fetch_lock
    from portal.jobs import exclusive

    box = _desk(app, world, smtp_server, dovecot, mail_user)
    dovecot.deliver(mail_user, email())
    with exclusive(fetch_lock(box.id)) as mine:
        assert mine
        busy = app.test_cli_runner().invoke(args=["mail", "fetch", "support@acme.example"])
    assert busy.exit_code == 1 and "a fetch of support@acme.example is under way" in busy.output
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == 0


def test_fetch_without_redis_says_so_and_fetches_nothing(app, world, dovecot, mail_user, smtp_server, redis):
    _desk(app, world, smtp_server, dovecot, mail_user)
    dovecot.deliver(mail_user, email())
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{unused_port()}/0"
    result = app.test_cli_runner().invoke(args=["mail", "fetch", "support@acme.example"])
    assert result.exit_code == 1 and "error: Redis cannot be reached" in result.output
    assert "Traceback" not in result.output
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == 0


def test_test_connection_exits_non_zero_with_the_plain_words_error(app, world, dovecot, mail_user, smtp_server):
    box = _desk(app, world, smtp_server, dovecot, mail_user, status="draft")
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert ok.exit_code == 0 and "Connected to 127.0.0.1" in ok.output
    box.port = unused_port()
    commit()
    down = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert down.exit_code == 1 and "127.0.0.1" in down.output and "Traceback" not in down.output
    db.session.refresh(box)
    assert box.last_test_ok is False and box.last_test_message  # the answer is kept


def test_test_connection_of_an_oauth2_mailbox_that_is_not_connected(app, world, msp):
    world.mailbox(msp, address="m365@acme.example", auth="oauth2", password=None, username="m365@acme.example",
                  oauth={"provider": "generic", "client_id": "tidemark-test",
                         "token_url": "http://127.0.0.1:9/token", "authorize_url": "http://127.0.0.1:9/authorize"})
    result = app.test_cli_runner().invoke(args=["mail", "test-connection", "m365@acme.example"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "signs in with OAuth2 and is not connected: connect it to its account first" in result.output
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == "m365@acme.example"))
    db.session.refresh(box)
    assert box.last_test_ok is False  # the answer is kept, as for a password


def test_fetch_and_test_connection_of_a_connected_oauth2_mailbox(app, world, oauth_dovecot, oauth_server, redis):
    from tests.services.test_mailbox_tokens import activate, connect, oauth_mailbox

    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    user = oauth_dovecot.new_user("ana")
    oauth_dovecot.deliver(user, email(sender="alice@contoso.com", subject="Token mail"))
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, acknowledge=False)
    grant = connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    runner = app.test_cli_runner()
    tested = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert tested.exit_code == 0, tested.output
    fetched = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert fetched.exit_code == 0, fetched.output
    assert [(line["outcome"], line["ticket"], line["client"]) for line in lines(fetched.output)] == [
        ("created", "T-1", "Contoso")]
    # The grant revoked at the provider: both commands say so in plain words, with its code.
    oauth_server.revoke_grant(grant.access_token)
    box = db.session.get(Mailbox, mailbox.id)
    box.oauth.access_token_expires_at = box.oauth.access_token_expires_at.replace(year=2000)
    commit()
    refused = runner.invoke(args=["mail", "fetch", "support@acme.example"])
    assert refused.exit_code == 1 and "invalid_grant" in refused.output and "Traceback" not in refused.output
    assert grant.refresh_token not in refused.output
    tested = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert tested.exit_code == 1 and "needs reconnecting" in tested.output
