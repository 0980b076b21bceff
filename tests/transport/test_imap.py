"""IMAP against the real Dovecot: connection security, errors, UID bookkeeping, fetch, after-processing."""

from __future__ import annotations

import datetime as dt

import pytest

from portal.mailboxes.forms import MailboxForm, OutgoingForm
from portal.transport import ImapSession, TransportError, open_session
from portal.transport.base import VERIFY_TLS_LABEL
from tests.dovecot import DroppingProxy
from tests.transport.helpers import make_message, sha


def _load(dovecot, user, count, **kw):
    raws = [make_message(i, **kw) for i in range(count)]
    for raw in raws:
        dovecot.deliver(user, raw)
    return raws


def _flags(dovecot, user, folder="INBOX"):
    """{uid: flags} read through a separate, read-only session."""
    with open_session(dovecot.settings(user)) as session:
        session.select(folder, readonly=True)
        client = session._client
        return {uid: set(flags) for uid, flags in client.get_flags(client.search("ALL")).items()}


# --- connecting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_connects_with_each_security_and_reads_inbox(dovecot, mail_user, security):
    _load(dovecot, mail_user, 2)
    with open_session(dovecot.settings(mail_user, "imap", security)) as session:
        assert isinstance(session, ImapSession)
        assert "INBOX" in session.list_folders()
        state = session.select("INBOX")
        assert state.exists == 2 and state.uidnext == 3 and state.uidvalidity > 0
        assert session.has("MOVE") and session.has("UIDPLUS")
        tls = session._client.socket()
        assert (security == "none") != hasattr(tls, "version"), "TLS must be on exactly when asked for"


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_is_a_tls_error(dovecot, mail_user, security):
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, "imap", security, ca_file=None))
    error = caught.value
    assert error.kind == "tls" and not error.transient
    assert error.message.startswith("the TLS certificate of 127.0.0.1 is not trusted: ")
    # It names the checkbox that allows a self-signed certificate, with the forms' own words.
    assert f"untick “{VERIFY_TLS_LABEL}” on its form" in error.message
    assert MailboxForm.verify_tls.args[0] == OutgoingForm.verify_tls.args[0] == VERIFY_TLS_LABEL


def test_verify_tls_off_accepts_the_untrusted_certificate(dovecot, mail_user):
    settings = dovecot.settings(mail_user, "imap", "ssl", ca_file=None, verify_tls=False)
    with open_session(settings) as session:
        assert session.select("INBOX").exists == 0


def test_ssl_on_a_plain_port_is_a_tls_error(dovecot, mail_user):
    settings = dovecot.settings(mail_user, "imap", "ssl", port=dovecot.imap_port)
    with pytest.raises(TransportError) as caught:
        open_session(settings)
    assert caught.value.kind == "tls"
    assert "does this port speak TLS" in caught.value.message


def test_wrong_password_is_an_auth_error_in_plain_words(dovecot, mail_user):
    secret = "Tr0ub4dor-and-3"
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, password=secret))
    error = caught.value
    assert error.kind == "auth" and not error.transient
    assert error.message == (f"authentication failed for {mail_user.name}: "
                             "the server said [AUTHENTICATIONFAILED] Authentication failed.")
    assert secret not in error.message and secret not in repr(error)


def test_password_never_in_repr_of_settings(dovecot, mail_user):
    settings = dovecot.settings(mail_user)
    assert mail_user.password not in repr(settings)
    assert mail_user.password not in str(settings)


def test_unreachable_port_is_a_transient_connect_error(dovecot, mail_user):
    from tests.dovecot import unused_port

    port = unused_port()
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(mail_user, port=port))
    assert caught.value.kind == "connect" and caught.value.transient
    assert caught.value.message == f"could not connect to 127.0.0.1:{port}: connection refused"


def test_plain_client_on_the_ssl_port_times_out(dovecot, mail_user):
    # Dovecot waits for a TLS hello, we wait for a greeting: only the read timeout ends it.
    settings = dovecot.settings(mail_user, "imap", "none", port=dovecot.imaps_port, timeout=1)
    with pytest.raises(TransportError) as caught:
        open_session(settings)
    assert caught.value.kind == "timeout" and caught.value.transient
    assert "within 1 second" in caught.value.message


def test_utf8_password_logs_in(dovecot):
    user = dovecot.add_user("umlaut-user", "pässwörd-€")
    with open_session(dovecot.settings(user)) as session:
        assert session.select("INBOX").exists == 0


def test_shared_mailbox_through_authorization_identity(dovecot, mail_user):
    master = dovecot.add_master_user("support-master", "master-secret")
    _load(dovecot, mail_user, 3)
    settings = dovecot.settings(master, auth_identity=mail_user.name)
    with open_session(settings) as session:
        assert session.select("INBOX").exists == 3
        raw = next(session.fetch([1])).raw
    assert raw == make_message(0)


def test_ordinary_user_cannot_open_another_mailbox(dovecot, mail_user):
    other = dovecot.new_user()
    with pytest.raises(TransportError) as caught:
        open_session(dovecot.settings(other, auth_identity=mail_user.name))
    assert caught.value.kind == "auth"
    assert f"{other.name} (mailbox {mail_user.name})" in caught.value.message


def test_missing_folder_is_a_folder_error(dovecot, mail_user):
    with open_session(dovecot.settings(mail_user)) as session:
        with pytest.raises(TransportError) as caught:
            session.select("No Such Folder")
    assert caught.value.kind == "folder" and not caught.value.transient
    assert "'No Such Folder'" in caught.value.message


# --- UIDs ----------------------------------------------------------------------------------------


def test_uids_after_edge_cases(dovecot, mail_user):
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        assert session.uids_after(0) == []  # empty folder
    _load(dovecot, mail_user, 5)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        assert session.uids_after(0) == [1, 2, 3, 4, 5]
        assert session.uids_after(3) == [4, 5]
        # "UID 6:*" matches UID 5 on the server; it must not come back.
        assert session.uids_after(5) == []
        assert session.uids_after(99) == []


def test_uids_after_since_uses_the_internal_date(dovecot, mail_user):
    old = dt.datetime(2020, 3, 1, 12, tzinfo=dt.timezone.utc)
    new = dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone.utc)
    dovecot.deliver(mail_user, make_message(1), internal_date=old)
    dovecot.deliver(mail_user, make_message(2), internal_date=new)
    dovecot.deliver(mail_user, make_message(3), internal_date=old)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        assert session.uids_after(0, since=dt.date(2024, 1, 1)) == [2]
        assert session.uids_after(0, since=dt.date(2019, 1, 1)) == [1, 2, 3]
        assert session.uids_after(2, since=dt.date(2019, 1, 1)) == [3]
        dates = [m.internal_date for m in session.fetch([1, 2])]
    assert dates[0] == old and dates[1] == new


def test_uids_after_leaves_out_messages_flagged_deleted(dovecot, mail_user):
    dovecot.deliver(mail_user, make_message(1))
    dovecot.deliver(mail_user, make_message(2), flags="\\Deleted")
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        assert session.uids_after(0) == [1]


def test_uidvalidity_change_is_visible(dovecot, mail_user):
    _load(dovecot, mail_user, 2)
    with open_session(dovecot.settings(mail_user)) as session:
        before = session.select("INBOX")
    dovecot.change_uidvalidity(mail_user)
    with open_session(dovecot.settings(mail_user)) as session:
        after = session.select("INBOX")
        assert session.uids_after(0) == [1, 2]
    assert after.uidvalidity != before.uidvalidity
    assert after.exists == 2


def test_reset_empties_the_mailbox(dovecot, mail_user):
    _load(dovecot, mail_user, 2)
    dovecot.deliver(mail_user, make_message(9), folder="Archive")
    dovecot.reset(mail_user)
    dovecot.deliver(mail_user, make_message(3))
    with open_session(dovecot.settings(mail_user)) as session:
        assert session.select("INBOX").exists == 1
        assert "Archive" not in session.list_folders()


# --- fetch ---------------------------------------------------------------------------------------


def test_fetch_keeps_bytes_exactly_and_never_sets_seen(dovecot, mail_user):
    raws = _load(dovecot, mail_user, 12, body_bytes=3000)
    raws.append(make_message(99, extra=b"a" * 20000 + b"\r\n"))  # one very long line
    dovecot.deliver(mail_user, raws[-1])
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        got = list(session.fetch(session.uids_after(0), batch_size=5))
    assert [m.server_id for m in got] == [str(uid) for uid in range(1, 14)]
    assert [sha(m.raw) for m in got] == [sha(raw) for raw in raws]
    assert all(m.size == len(m.raw) for m in got)
    assert all(m.internal_date is not None and m.internal_date.tzinfo for m in got)
    assert all(b"\\Seen" not in flags for flags in _flags(dovecot, mail_user).values())


def test_fetch_batches_are_bounded_in_count_and_bytes(dovecot, mail_user):
    raws = _load(dovecot, mail_user, 10, body_bytes=10_000)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        calls = []
        real_fetch = session._client.fetch

        def spy(messages, data, *args, **kw):
            if "BODY.PEEK[]" in data:
                calls.append(list(messages))
            return real_fetch(messages, data, *args, **kw)

        session._client.fetch = spy
        by_count = list(session.fetch(range(1, 11), batch_size=4))
        assert [len(c) for c in calls] == [4, 4, 2]
        calls.clear()
        by_bytes = list(session.fetch(range(1, 11), batch_size=100, batch_bytes=25_000))
        assert [len(c) for c in calls] == [2, 2, 2, 2, 2]
    assert [m.raw for m in by_count] == [m.raw for m in by_bytes] == raws


def test_fetch_many_messages(dovecot, mail_user):
    raws = _load(dovecot, mail_user, 2500)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        uids = session.uids_after(0)
        assert len(uids) == 2500
        hashes = [sha(m.raw) for m in session.fetch(uids)]
    assert hashes == [sha(raw) for raw in raws]


def test_oversized_message_comes_without_body(dovecot, mail_user):
    small1, big, small2 = make_message(1), make_message(2, body_bytes=50_000), make_message(3)
    for raw in (small1, big, small2):
        dovecot.deliver(mail_user, raw)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        got = list(session.fetch([3, 1, 2, 2], max_bytes=10_000))  # order and repeats don't matter
    assert [m.server_id for m in got] == ["1", "2", "3"]
    assert got[0].raw == small1 and got[2].raw == small2
    assert got[1].raw is None and got[1].size == len(big)


def test_fetch_skips_uids_that_do_not_exist(dovecot, mail_user):
    _load(dovecot, mail_user, 2)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        assert [m.server_id for m in session.fetch([1, 7, 2, 40])] == ["1", "2"]


def test_connection_dropped_mid_fetch_is_transient(dovecot, mail_user):
    _load(dovecot, mail_user, 6, body_bytes=20_000)
    with DroppingProxy(dovecot.imap_port, after_bytes=50_000) as proxy:
        settings = dovecot.settings(mail_user, port=proxy.port)
        got = []
        with pytest.raises(TransportError) as caught:
            with open_session(settings) as session:  # leaving must survive the dead connection
                session.select("INBOX")
                for message in session.fetch(session.uids_after(0), batch_size=1):
                    got.append(message)
        assert proxy.tripped.is_set()
    assert caught.value.kind == "connect" and caught.value.transient
    assert "was lost while fetching messages" in caught.value.message
    assert 0 < len(got) < 6


def test_server_stalling_mid_fetch_is_a_timeout(dovecot, mail_user):
    _load(dovecot, mail_user, 3, body_bytes=20_000)
    with DroppingProxy(dovecot.imap_port, after_bytes=30_000, mode="stall") as proxy:
        settings = dovecot.settings(mail_user, port=proxy.port, timeout=1)
        with pytest.raises(TransportError) as caught:
            with open_session(settings) as session:
                session.select("INBOX")
                list(session.fetch([1, 2, 3], batch_size=1))
    assert caught.value.kind == "timeout" and caught.value.transient


# --- after processing ----------------------------------------------------------------------------


def test_mark_seen_touches_only_the_given_uids(dovecot, mail_user):
    _load(dovecot, mail_user, 5)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        session.mark_seen([2, 4])
    flags = _flags(dovecot, mail_user)
    assert {uid for uid, f in flags.items() if b"\\Seen" in f} == {2, 4}


def test_move_creates_the_folder_and_moves_only_the_given_uids(dovecot, mail_user):
    raws = _load(dovecot, mail_user, 5)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        session.move([1, 3], "Processed")
        assert "Processed" in session.list_folders()
        assert session.uids_after(0) == [2, 4, 5]
        state = session.select("Processed")
        assert state.exists == 2
        moved = [m.raw for m in session.fetch(session.uids_after(0))]
    assert moved == [raws[0], raws[2]]


def test_move_without_the_move_capability_copies_and_expunges_by_uid(dovecot, mail_user):
    raws = _load(dovecot, mail_user, 4)
    dovecot.deliver(mail_user, make_message(50), flags="\\Deleted")  # someone else's, must stay
    with open_session(dovecot.settings(mail_user)) as session:
        session._capabilities = session._capabilities - {"MOVE"}
        session.select("INBOX")
        session.move([2, 3], "Done")
        assert session.select("INBOX").exists == 3
        assert session.uids_after(0) == [1, 4]
        session.select("Done")
        assert [m.raw for m in session.fetch(session.uids_after(0))] == raws[1:3]


def test_delete_removes_only_the_given_uids(dovecot, mail_user):
    _load(dovecot, mail_user, 5)
    dovecot.deliver(mail_user, make_message(60), flags="\\Deleted")  # flagged by another client
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX")
        session.delete([1, 5])
        state = session.select("INBOX")
    assert state.exists == 4  # 2, 3, 4 and the other client's \Deleted one (UID EXPUNGE)
    assert set(_flags(dovecot, mail_user)) == {2, 3, 4, 6}


def test_ensure_folder_is_idempotent(dovecot, mail_user):
    with open_session(dovecot.settings(mail_user)) as session:
        session.ensure_folder("Tidemark")
        session.ensure_folder("Tidemark")
        assert session.list_folders().count("Tidemark") == 1


def test_changes_refused_on_a_read_only_folder(dovecot, mail_user):
    _load(dovecot, mail_user, 1)
    with open_session(dovecot.settings(mail_user)) as session:
        session.select("INBOX", readonly=True)
        with pytest.raises(TransportError) as caught:
            session.mark_seen([1])
    assert caught.value.kind == "folder"


def test_leaving_after_the_server_closed_the_connection_does_not_raise(dovecot, mail_user):
    with DroppingProxy(dovecot.imap_port, after_bytes=10_000_000) as proxy:
        session = open_session(dovecot.settings(mail_user, port=proxy.port))
        with session:
            session.select("INBOX")
            proxy.close()  # the server side goes away
        with pytest.raises(TransportError):
            session.select("INBOX")  # closed sessions say so instead of crashing
