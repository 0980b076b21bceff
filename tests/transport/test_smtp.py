"""SMTP sending against a real aiosmtpd server: security modes, login, and what each failure says."""
from __future__ import annotations

import pickle
import socket
import threading
import time

import pytest

from portal.mail.compose import compose
from portal.mail.render import RenderedEmail
from portal.transport.base import TransportError
from portal.transport.smtp import (SendResult, SmtpConnection, SmtpError, SmtpSettings, check_connection, send,
                                   send_many)

from tests.smtp import SMTP_PASSWORD, SMTP_USER

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _message(to="anna@northwind.example", cc=(), subject="Printer", n: int = 0):
    return compose(RenderedEmail(f"{subject} {n}".strip(), f"Hello {n}\n", f"<p>Hello {n}</p>"),
                   from_address="support@harbor-it.example", to=to, cc=cc, host="tidemark.example")


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_sends_in_every_security_mode(smtp_server, security):
    message = _message()
    result = send(smtp_server.settings(security, login=True), message)
    received = smtp_server.last()
    assert received.tls is (security != "none")
    assert received.login == SMTP_USER
    assert received.rcpt_tos == ["anna@northwind.example"]
    assert received.message["Message-ID"] == message["Message-ID"] == result.message_id
    assert result.accepted == ("anna@northwind.example",) and not result.partial
    assert result.reply.startswith("250") and "queued as" in result.reply
    assert "sent to anna@northwind.example" in result.describe()


def test_sends_without_login(smtp_server):
    send(smtp_server.settings("starttls"), _message())
    assert smtp_server.last().login is None


def test_envelope_and_bcc(smtp_server):
    message = _message(to="a@x.example", cc=["c@x.example"])
    message["Bcc"] = "hidden@x.example"
    send(smtp_server.settings(), message, envelope_from="bounces@harbor-it.example")
    received = smtp_server.last()
    assert received.mail_from == "bounces@harbor-it.example"
    assert received.rcpt_tos == ["a@x.example", "c@x.example", "hidden@x.example"]
    assert b"hidden@x.example" not in received.data
    assert message["Bcc"] == "hidden@x.example"  # the caller's message is untouched


def test_envelope_from_falls_back_to_the_from_header(smtp_server):
    send(smtp_server.settings(from_address=None), _message(), recipients=["other@x.example"])
    received = smtp_server.last()
    assert received.mail_from == "support@harbor-it.example"
    assert received.rcpt_tos == ["other@x.example"]


def test_wrong_password_in_plain_words_without_the_password(smtp_server):
    settings = smtp_server.settings("starttls", login=True, password="Wr0ng-Pässwörd-xyz")
    with pytest.raises(SmtpError) as info:
        send(settings, _message())
    error = info.value
    assert isinstance(error, TransportError)
    assert error.kind == "auth" and error.temporary is False and error.code == 535
    assert error.message.startswith(f"authentication failed for {SMTP_USER}: the server said 535")
    for text in (str(error), repr(error), repr(settings), error.message):
        assert "Wr0ng-Pässwörd-xyz" not in text and SMTP_PASSWORD not in text
    assert smtp_server.messages == []


def test_non_ascii_password_works(smtp_server):
    assert not SMTP_PASSWORD.isascii()
    send(smtp_server.settings("ssl", login=True), _message())
    assert smtp_server.auth_attempts[-1] == (SMTP_USER, True)


def test_temporary_recipient_refusal(smtp_server):
    with pytest.raises(SmtpError) as info:
        send(smtp_server.settings(), _message(to="busy@northwind.example"))
    error = info.value
    assert error.kind == "recipient" and error.temporary is True and error.code == 450
    assert error.message == ("the server refused the recipient busy@northwind.example: "
                             "450 4.2.1 Mailbox busy, try again later")


def test_permanent_recipient_refusal(smtp_server):
    with pytest.raises(SmtpError) as info:
        send(smtp_server.settings(), _message(to="gone@northwind.example"))
    error = info.value
    assert error.kind == "recipient" and error.temporary is False and error.code == 550
    assert error.message == "the server refused the recipient gone@northwind.example: 550 5.1.1 User unknown"


def test_every_recipient_refused_mixed_is_permanent_only_if_all_are(smtp_server):
    with pytest.raises(SmtpError) as info:
        send(smtp_server.settings(), _message(to="busy@x.example", cc=["gone@x.example"]))
    assert info.value.temporary is False
    assert info.value.message.startswith("the server refused every recipient: busy@x.example (450")
    assert [r.address for r in info.value.refusals] == ["busy@x.example", "gone@x.example"]


def test_partial_refusal_is_reported(smtp_server):
    result = send(smtp_server.settings(), _message(to="anna@x.example", cc=["gone@x.example", "busy@x.example"]))
    assert isinstance(result, SendResult) and result.partial
    assert result.accepted == ("anna@x.example",)
    assert [(r.address, r.code, r.temporary) for r in result.refused] == [
        ("gone@x.example", 550, False), ("busy@x.example", 450, True)]
    assert "the server refused the recipient gone@x.example: 550 5.1.1 User unknown" in result.describe()
    assert smtp_server.last().rcpt_tos == ["anna@x.example"]


@pytest.mark.parametrize("reply, temporary", [("451 4.3.0 Try again later", True),
                                              ("552 5.3.4 Message too big", False)])
def test_refused_message(smtp_server, reply, temporary):
    smtp_server.data_reply = reply
    with pytest.raises(SmtpError) as info:
        send(smtp_server.settings(), _message())
    assert info.value.kind == "message" and info.value.temporary is temporary
    assert info.value.message == f"the server refused the message: {reply}"


@pytest.mark.parametrize("reply, temporary", [("421 4.7.0 Too many connections", True),
                                              ("553 5.7.1 Sender address rejected", False)])
def test_refused_sender(smtp_server, reply, temporary):
    smtp_server.mail_reply = reply
    with pytest.raises(SmtpError) as info:
        send(smtp_server.settings(), _message())
    assert info.value.kind == "sender" and info.value.temporary is temporary
    assert info.value.message == f"the server refused the sender address support@msp.example: {reply}"


def test_connection_refused_is_temporary():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    with pytest.raises(SmtpError) as info:
        send(SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5), _message())
    assert info.value.kind == "connect" and info.value.temporary is True
    assert info.value.message == f"could not connect to 127.0.0.1:{port}: connection refused"


def test_silent_server_times_out_temporarily():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection but never greets
    try:
        started = time.monotonic()
        with pytest.raises(SmtpError) as info:
            send(SmtpSettings(host="127.0.0.1", port=listener.getsockname()[1], security="none", timeout=0.5),
                 _message())
        assert time.monotonic() - started < 5
    finally:
        listener.close()
    assert info.value.kind == "timeout" and info.value.temporary is True
    assert "no answer within 0.5 seconds" in info.value.message


def test_untrusted_certificate_is_permanent(smtp_server):
    for security in ("ssl", "starttls"):
        settings = smtp_server.settings(security, ca_file=None)
        with pytest.raises(SmtpError) as info:
            send(settings, _message())
        assert info.value.kind == "tls" and info.value.temporary is False
        assert "certificate of 127.0.0.1 is not trusted" in info.value.message
    send(smtp_server.settings("ssl", ca_file=None, verify_tls=False), _message())
    assert smtp_server.last().tls


def test_plain_client_on_the_tls_port(smtp_server):
    settings = smtp_server.settings("none", port=smtp_server.ssl_port, timeout=1.0)
    with pytest.raises(SmtpError) as info:
        send(settings, _message())
    assert info.value.temporary is True and info.value.kind in ("connect", "timeout")


def test_starttls_not_offered():
    # A tiny server that greets and answers EHLO without STARTTLS.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 tiny ESMTP\r\n")
            buffer = b""
            while True:
                data = conn.recv(1024)
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-tiny\r\n250 SIZE 1000000\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"502 no\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(SmtpError) as info:
            send(SmtpSettings(host="127.0.0.1", port=listener.getsockname()[1], security="starttls", timeout=5),
                 _message())
    finally:
        thread.join(5)
        listener.close()
    assert info.value.kind == "tls" and info.value.temporary is False
    assert "does not offer STARTTLS" in info.value.message


def test_one_connection_for_many_messages(smtp_server):
    messages = [_message(n=n) for n in range(5)]
    messages[2] = _message(to="gone@x.example", n=2)
    results = send_many(smtp_server.settings("starttls", login=True), messages)
    assert [type(r).__name__ for r in results] == ["SendResult", "SendResult", "SmtpError", "SendResult",
                                                   "SendResult"]
    assert results[2].kind == "recipient" and not results[2].temporary
    assert [m.message["Subject"] for m in smtp_server.messages] == ["Printer 0", "Printer 1", "Printer 3",
                                                                    "Printer 4"]
    assert len({m.peer for m in smtp_server.messages}) == 1  # the same connection throughout


def test_many_with_a_wrong_password_stops_trying(smtp_server):
    results = send_many(smtp_server.settings(login=True, password="nope"), [_message(n=n) for n in range(3)])
    assert all(isinstance(r, SmtpError) and r.kind == "auth" for r in results)
    assert len(smtp_server.auth_attempts) == 1


def test_connection_object_and_check(smtp_server):
    with SmtpConnection(smtp_server.settings("ssl", login=True)) as connection:
        assert connection.is_open
        connection.send(_message(n=1))
        connection.send(_message(n=2))
    assert not connection.is_open
    assert len(smtp_server.messages) == 2
    assert check_connection(smtp_server.settings("starttls", login=True)).startswith("connected to 127.0.0.1:")


def test_settings_validation_and_errors_pickle():
    with pytest.raises(ValueError):
        SmtpSettings(host="x", security="tls")
    with pytest.raises(ValueError):
        SmtpSettings(host="x", port=0)
    assert "hunter2" not in repr(SmtpSettings(host="x", password="hunter2"))
    error = SmtpError("recipient", "the server refused the recipient a@x: 450 busy", True, 450)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.message, copy.temporary, copy.code, copy.transient) == (
        "recipient", error.message, True, 450, True)


def _dotted_message():
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "support@harbor-it.example", "a@x.example", "Dots"
    message.set_content("first\n.\n..two dots\n.starts with a dot\nlast\n", cte="7bit")
    return message


def test_the_hand_over_comes_once_the_server_holds_the_message_and_before_it_takes_it(smtp_server):
    seen = []
    result = send(smtp_server.settings(), _dotted_message(), hand_over=lambda: seen.append(len(smtp_server.messages)))
    assert seen == [0] and len(smtp_server.messages) == 1 and result.reply.startswith("250")
    # What smtplib's data() did for us: a dot that starts a line doubled on the wire, CRLF line ends.
    assert b"\r\nfirst\r\n.\r\n..two dots\r\n.starts with a dot\r\nlast\r\n" in smtp_server.last().data


def test_a_failed_hand_over_sends_nothing_and_its_own_error_goes_up(smtp_server):
    class DatabaseAway(Exception):
        pass

    def hand_over():
        raise DatabaseAway("the database could not be reached")

    with pytest.raises(DatabaseAway):
        send(smtp_server.settings(), _message(), hand_over=hand_over)
    time.sleep(0.2)  # the server has seen the connection close without the final dot
    assert smtp_server.messages == []
    send(smtp_server.settings(), _message(n=1))
    assert [m.message["Subject"] for m in smtp_server.messages] == ["Printer 1"]


def test_lines_that_start_with_a_dot_arrive_whole_without_a_hand_over_too(smtp_server):
    send(smtp_server.settings(), _dotted_message())
    assert b"\r\nfirst\r\n.\r\n..two dots\r\n.starts with a dot\r\nlast\r\n" in smtp_server.last().data
