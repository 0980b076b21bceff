"""POP3 against the real Dovecot: security, listing, exact bytes, deletion only on a clean QUIT."""

from __future__ import annotations

import pytest

from portal.transport import Pop3Session, TransportError, open_session
from tests.dovecot import DroppingProxy
from tests.transport.helpers import make_message, sha


def _load(dovecot, user, count, **kw):
    raws = [make_message(i, **kw) for i in range(count)]
    for raw in raws:
        dovecot.deliver(user, raw)
    return raws


def _count(dovecot, user) -> int:
    with open_session(dovecot.settings(user, "pop3")) as session:
        return session.stat()[0]


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_connects_with_each_security_and_lists(dovecot, mail_user, security):
    raws = _load(dovecot, mail_user, 3)
    with open_session(dovecot.settings(mail_user, "pop3", security)) as session:
        assert isinstance(session, Pop3Session)
        rows = session.listing()
        assert [n for n, _, _ in rows] == [1, 2, 3]
        assert len({uidl for _, uidl, _ in rows}) == 3
        assert [size for _, _, size in rows] == [len(raw) for raw in raws]
        assert (security == "none") != hasattr(session._pop.sock, "version")


def test_untrusted_certificate_is_a_tls_error(dovecot, mail_user):
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, "pop3", "starttls", ca_file=None))
    assert caught.value.kind == "tls"
    assert "is not trusted" in caught.value.message


def test_retrieve_keeps_bytes_exactly(dovecot, mail_user):
    # Dot-stuffed lines, 8-bit text and a line far over poplib's own 2,048-byte limit.
    raws = _load(dovecot, mail_user, 3, body_bytes=5000, extra=b"y" * 9000 + b"\r\n")
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        got = [session.retrieve(n) for n, _, _ in session.listing()]
    assert [sha(raw) for raw in got] == [sha(raw) for raw in raws]


def test_uidl_is_stable_across_sessions(dovecot, mail_user):
    _load(dovecot, mail_user, 3)
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        first = session.listing()
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        session.delete(1)
        assert session.listing() == first[1:]  # a deleted message leaves the listing at once
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        assert [uidl for _, uidl, _ in session.listing()] == [uidl for _, uidl, _ in first[1:]]


def test_deletion_happens_on_a_clean_quit(dovecot, mail_user):
    _load(dovecot, mail_user, 3)
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        session.delete(2)
    with open_session(dovecot.settings(mail_user, "pop3")) as session:
        remaining = [session.retrieve(n) for n, _, _ in session.listing()]
    assert remaining == [make_message(0), make_message(2)]


def test_an_error_inside_the_session_deletes_nothing(dovecot, mail_user):
    _load(dovecot, mail_user, 3)
    with pytest.raises(RuntimeError):
        with open_session(dovecot.settings(mail_user, "pop3")) as session:
            session.delete(1)
            session.delete(2)
            raise RuntimeError("storing the message failed")
    assert _count(dovecot, mail_user) == 3


def test_wrong_password_is_an_auth_error(dovecot, mail_user):
    secret = "not-the-password-42"
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, "pop3", password=secret))
    error = caught.value
    assert error.kind == "auth" and not error.transient
    assert error.message == (f"authentication failed for {mail_user.name}: "
                             "the server said [AUTH] Authentication failed.")
    assert secret not in error.message


def test_unreachable_port_is_a_transient_connect_error(dovecot, mail_user):
    from tests.dovecot import unused_port

    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, "pop3", port=unused_port()))
    assert caught.value.kind == "connect" and caught.value.transient
    assert "connection refused" in caught.value.message


def test_shared_mailbox_through_authorization_identity(dovecot, mail_user):
    master = dovecot.add_master_user("pop-master", "pop-master-secret")
    raws = _load(dovecot, mail_user, 2)
    with open_session(dovecot.settings(master, "pop3", "starttls", auth_identity=mail_user.name)) as session:
        assert [session.retrieve(n) for n, _, _ in session.listing()] == raws


def test_connection_dropped_mid_retrieve_is_transient_and_deletes_nothing(dovecot, mail_user):
    _load(dovecot, mail_user, 4, body_bytes=20_000)
    with DroppingProxy(dovecot.pop3_port, after_bytes=50_000) as proxy:
        with pytest.raises(TransportError) as caught:
            with open_session(dovecot.settings(mail_user, "pop3", port=proxy.port)) as session:
                for number, _, _ in session.listing():
                    session.retrieve(number)
                    session.delete(number)
    assert caught.value.kind == "connect" and caught.value.transient
    assert "was lost while downloading message" in caught.value.message
    assert _count(dovecot, mail_user) == 4
