""""Test connection" answers in plain words and never raises."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from portal.transport import ServerSettings, TransportError, test_connection
from tests.dovecot import unused_port
from tests.transport.helpers import make_message


@pytest.mark.parametrize(("protocol", "security", "words", "where"), [
    ("imap", "none", "without encryption", "INBOX"),
    ("imap", "starttls", "with STARTTLS", "INBOX"),
    ("imap", "ssl", "with SSL/TLS", "INBOX"),
    ("pop3", "none", "without encryption", "the mailbox"),
    ("pop3", "starttls", "with STARTTLS", "the mailbox"),
    ("pop3", "ssl", "with SSL/TLS", "the mailbox"),
])
def test_success_in_plain_words(dovecot, mail_user, protocol, security, words, where):
    for i in range(12):
        dovecot.deliver(mail_user, make_message(i))
    settings = dovecot.settings(mail_user, protocol, security)
    result = test_connection(settings)
    assert result.ok, result.message
    assert result.message == (f"Connected to 127.0.0.1:{settings.port} {words} as {mail_user.name}; "
                              f"{where} has 12 messages.")
    assert result.messages == 12 and result.kind is None
    assert 0 < result.seconds < 10
    if protocol == "imap":
        assert "INBOX" in result.folders and "UIDPLUS" in result.capabilities
    else:
        assert "UIDL" in result.capabilities


def test_one_message_is_singular(dovecot, mail_user):
    dovecot.deliver(mail_user, make_message(1))
    assert test_connection(dovecot.settings(mail_user)).message.endswith("INBOX has 1 message.")


def test_shared_mailbox_is_named(dovecot, mail_user):
    master = dovecot.add_master_user("probe-master", "probe-secret")
    result = test_connection(dovecot.settings(master, auth_identity=mail_user.name))
    assert result.ok
    assert f"as probe-master (mailbox {mail_user.name}); INBOX has 0 messages." in result.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_failures_in_plain_words(dovecot, mail_user, protocol):
    wrong = test_connection(dovecot.settings(mail_user, protocol, password="Wrong-Secret-123"))
    assert not wrong.ok and wrong.kind == "auth" and wrong.messages is None
    assert wrong.message.startswith(f"authentication failed for {mail_user.name}: the server said ")
    assert "Wrong-Secret-123" not in wrong.message

    port = unused_port()
    refused = test_connection(dovecot.settings(mail_user, protocol, port=port))
    assert (refused.ok, refused.kind) == (False, "connect")
    assert refused.message == f"could not connect to 127.0.0.1:{port}: connection refused"

    untrusted = test_connection(dovecot.settings(mail_user, protocol, "ssl", ca_file=None))
    assert (untrusted.ok, untrusted.kind) == (False, "tls")
    assert untrusted.message.startswith("the TLS certificate of 127.0.0.1 is not trusted: ")

    wrong_port = test_connection(dovecot.settings(mail_user, protocol, "ssl",
                                                  port=dovecot.port(protocol, "none")))
    assert (wrong_port.ok, wrong_port.kind) == (False, "tls")
    assert "does this port speak TLS? check the security setting" in wrong_port.message

    other = "pop3" if protocol == "imap" else "imap"
    crossed = test_connection(dovecot.settings(mail_user, protocol, "none", port=dovecot.port(other, "none"),
                                               timeout=2))
    assert (crossed.ok, crossed.kind) == (False, "protocol")
    assert f"does not answer like {'an IMAP' if protocol == 'imap' else 'a POP3'} server" in crossed.message

    silent = test_connection(dovecot.settings(mail_user, protocol, "none",
                                              port=dovecot.port(protocol, "ssl"), timeout=0.5))
    assert (silent.ok, silent.kind) == (False, "timeout")


def test_never_raises_even_on_surprises(monkeypatch):
    import portal.transport.imap as imap

    def boom(self, settings):
        raise ZeroDivisionError("secret-pw in a surprising place")

    monkeypatch.setattr(imap.ImapSession, "__init__", boom)
    settings = ServerSettings("imap", "127.0.0.1", 1, "none", "someone", "secret-pw")
    result = test_connection(settings)
    assert not result.ok and "ZeroDivisionError" in result.message
    assert "secret-pw" not in result.message


def test_transport_error_shape():
    error = TransportError("auth", "authentication failed for a: the server said no")
    assert (error.kind, error.transient, str(error)) == ("auth", False, error.message)
    assert TransportError("timeout", "slow").transient
    assert TransportError("protocol", "dropped", transient=True).transient
    copy = pickle.loads(pickle.dumps(TransportError("connect", "gone")))
    assert (copy.kind, copy.message, copy.transient) == ("connect", "gone", True)
    with pytest.raises(ValueError):
        TransportError("nonsense", "x")
    with pytest.raises(ValueError):
        ServerSettings("smtp", "h", 25, "none", "u", "p")


def test_transport_is_plain_python():
    """Worker jobs and the portal both use it: no Flask, SQLAlchemy or RQ inside."""
    package = Path(__file__).resolve().parents[2] / "portal" / "transport"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"flask", "sqlalchemy", "rq", "flask_sqlalchemy"}, f"{path.name} imports {name}"
                if top == "portal":  # only other plain-Python modules of ours (the soak runs' fault hook)
                    assert name.startswith(("portal.transport", "portal.mail", "portal.faults")), \
                        f"{path.name} imports {name}"
