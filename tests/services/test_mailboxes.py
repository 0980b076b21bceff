import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from portal import crypto
from portal.models import AuditEntry, Mailbox
from portal.services import ValidationError, commit
from portal.services.mailboxes import password_of, rotate_secrets, save_mailbox, server_settings
from portal.services.routes import RouteInput


def save(app, msp, values, routes=None, mailbox=None):
    return save_mailbox(msp, msp, dict(values), keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None,
                        routes=routes, mailbox=mailbox)


def errors_of(call):
    with pytest.raises(ValidationError) as err:
        call()
    return err.value.errors


def test_password_is_encrypted_at_rest_and_never_in_the_audit(app, db, msp):
    mailbox, _ = save(app, msp, {"address": "Support@Acme.example", "password": "hunter2-secret"})
    commit()
    assert mailbox.address == "support@acme.example"
    assert b"hunter2" not in mailbox.password_encrypted
    assert password_of(mailbox, app.config["TIDEMARK_ENCRYPTION_KEY"]) == "hunter2-secret"
    assert "hunter2" not in repr(server_settings(mailbox, app.config["TIDEMARK_ENCRYPTION_KEY"]))
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "mailbox"))
    assert entry.changes["password"] == [None, "(set)"]


def test_every_wrong_field_is_named(app, msp):
    errors = errors_of(lambda: save(app, msp, {
        "address": "not-an-address", "protocol": "smtp", "port": 70000, "host": "bad host!",
        "skip_windows": ["25:00-26:00"], "poll_interval": 1, "aliases": ["ok@acme.example", "nope"],
        "sync_start_date": "31/12/2026", "folders": []}))
    assert set(errors) >= {"address", "protocol", "port", "host", "skip_windows", "poll_interval", "aliases",
                           "sync_start_date", "folders"}


def test_after_action_must_fit_the_protocol(app, msp):
    errors = errors_of(lambda: save(app, msp, {"address": "p@acme.example", "protocol": "pop3", "after_action": "move"}))
    assert "POP3 can: keep, delete" in errors["after_action"][0]


@pytest.mark.parametrize("routes, message", [
    ([{"name": "A", "recipients": ["a@acme.example"]}], "exactly one fallback"),
    ([{"name": "W", "recipients": ["*"]}, {"name": "F", "fallback": True}], "needs a sender list"),
    ([{"name": "W", "recipients": ["*"], "senders": ["*"]}, {"name": "F", "fallback": True}], "cannot have a wildcard sender"),
    ([{"name": "F1", "fallback": True}, {"name": "F2", "fallback": True}], "exactly one fallback"),
])
def test_route_rules_are_enforced_with_clear_messages(app, msp, routes, message):
    inputs = [RouteInput(client=msp, **r) for r in routes]
    errors = errors_of(lambda: save(app, msp, {"address": "r@acme.example"}, routes=inputs))
    assert message in " ".join(errors["routes"])


def test_routes_are_kept_exact_then_wildcard_then_fallback(app, msp):
    inputs = [RouteInput(name="F", client=msp, fallback=True),
              RouteInput(name="W", client=msp, recipients=["*"], senders=["partner.example"]),
              RouteInput(name="E", client=msp, recipients=["vip@acme.example"])]
    mailbox, _ = save(app, msp, {"address": "r@acme.example"}, routes=inputs)
    assert [r.name for r in mailbox.routes] == ["E", "W", "F"]


def test_a_mailbox_with_routes_cannot_be_activated_without_a_fallback(app, msp):
    mailbox, _ = save(app, msp, {"address": "r@acme.example", "host": "imap.acme.example", "username": "u",
                                 "password": "p"})
    mailbox.routes.clear()
    from portal.models import Route
    mailbox.routes.append(Route(name="only", client_id=msp.id, recipients=["r@acme.example"]))
    errors = errors_of(lambda: save(app, msp, {"status": "active"}, mailbox=mailbox))
    assert "without a fallback route" in " ".join(errors["status"])


def test_a_switched_off_fallback_route_blocks_activation(app, msp):
    from portal.models import Route

    mailbox, _ = save(app, msp, {"address": "r@acme.example", "host": "imap.acme.example", "username": "u",
                                 "password": "p"})
    mailbox.routes.clear()
    mailbox.routes.append(Route(name="Everything", client_id=msp.id, recipients=[], fallback=True, enabled=False))
    errors = errors_of(lambda: save(app, msp, {"status": "active"}, mailbox=mailbox))
    assert "fallback route is switched off" in " ".join(errors["status"])
    mailbox.routes[0].enabled = True
    assert save(app, msp, {"status": "active"}, mailbox=mailbox)[0].status == "active"


def test_activation_needs_server_and_credentials(app, msp):
    errors = errors_of(lambda: save(app, msp, {"address": "r@acme.example", "status": "active"}))
    assert any("host name" in m for m in errors["status"]) and any("password" in m for m in errors["status"])


def test_secrets_rotate_to_a_new_key_and_the_old_key_can_go(app, db, msp):
    old = app.config["TIDEMARK_ENCRYPTION_KEY"]
    mailbox, _ = save(app, msp, {"address": "s@acme.example", "password": "pw-123"})
    commit()
    new = Fernet.generate_key().decode()
    assert rotate_secrets(f"{new},{old}") == 1
    commit()
    db.session.expire_all()
    stored = db.session.get(Mailbox, mailbox.id).password_encrypted
    assert crypto.decrypt(new, stored) == "pw-123"
    with pytest.raises(crypto.SecretError):
        crypto.decrypt(old, stored)


def test_the_flask_secrets_rotate_command(app, db, msp, monkeypatch, rotate_keys):
    save(app, msp, {"address": "s@acme.example", "password": "pw-123"})
    commit()
    _new, output = rotate_keys()
    assert "Re-encrypted 1 secret" in output
    app.config["TIDEMARK_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    bad = app.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert bad.exit_code == 1 and "cannot be decrypted" in bad.output
