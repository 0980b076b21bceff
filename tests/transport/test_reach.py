"""Servers a tenant types in: refused addresses, one lookup, and answers that never echo strangers."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

import pytest

from portal.transport import ServerSettings, test_connection
from portal.transport.reach import Reach, RefusedServer, refusal
from portal.transport.smtp import SmtpError, check_connection
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def net(text):
    return ipaddress.ip_network(text)


@pytest.mark.parametrize(("address", "words"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("::ffff:169.254.169.254", "link-local"),
])
def test_built_in_refusals(address, words):
    assert words in refusal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["10.1.2.3", "::ffff:10.1.2.3", "172.16.0.5", "192.168.1.10", "fd00::5", "8.8.8.8",
                                     "2001:4860:4860::8888", "100.64.0.1"])
def test_private_and_public_addresses_stay_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_operator_networks_allow_and_deny():
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed=LOOPBACK) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed=LOOPBACK) is None
    assert "closed" in refusal(ipaddress.ip_address("10.1.2.3"), denied=(net("10.0.0.0/8"),))
    # Denied wins over allowed.
    assert "closed" in refusal(ipaddress.ip_address("127.0.0.1"), allowed=LOOPBACK, denied=(net("127.0.0.1/32"),))
    assert "loopback" in refusal(ipaddress.ip_address("::1"), allowed=LOOPBACK)


def resolver(*answers):
    """A stand-in DNS: each call answers the next list of addresses (the last one repeats)."""
    calls = []

    def resolve(host, port, type=0):  # noqa: A002 - getaddrinfo's keyword
        calls.append(host)
        addresses = answers[min(len(calls), len(answers)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]

    resolve.calls = calls
    return resolve


def test_every_resolved_address_is_checked_and_unrestricted_means_no_lookup():
    sneaky = resolver(["93.184.216.34", "127.0.0.1"])
    with pytest.raises(RefusedServer) as caught:
        Reach(restricted=True, resolve=sneaky).addresses("mail.example.com", 993)
    assert caught.value.message == (
        "mail.example.com cannot be used as a server here: it is an address of this machine itself (loopback). "
        "If this server is meant to be reached, ask the operator of this installation to allow its network.")
    assert (caught.value.kind, caught.value.transient) == ("connect", False)
    assert Reach(restricted=True, resolve=resolver(["10.0.0.7", "10.0.0.8"])).addresses("h", 1) == ["10.0.0.7", "10.0.0.8"]
    untouched = resolver(["127.0.0.1"])
    assert Reach(restricted=False, resolve=untouched).addresses("h", 1) is None and untouched.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0.0.0.0", "169.254.169.254",
                                  "224.0.0.1"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_refused_before_any_connection_is_made(host, protocol):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        result = test_connection(ServerSettings(protocol, host, port, "none", "u", "stored-secret", timeout=5,
                                                reach=Reach(restricted=True)))
        assert (result.ok, result.kind) == (False, "connect")
        assert result.message.startswith(f"{host} cannot be used as a server here: it is ")
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody knocked
    finally:
        listener.close()


@pytest.mark.parametrize(("protocol", "security"), [("imap", "none"), ("imap", "starttls"), ("imap", "ssl"),
                                                    ("pop3", "none"), ("pop3", "starttls"), ("pop3", "ssl")])
def test_an_allowed_network_reaches_the_server_and_tls_checks_the_typed_name(dovecot, mail_user, protocol, security):
    allowed = Reach(restricted=True, allowed=LOOPBACK)
    ok = test_connection(dovecot.settings(mail_user, protocol, security, host="localhost", reach=allowed))
    assert ok.ok, ok.message
    # The certificate is for localhost and 127.0.0.1: a name that resolves to 127.0.0.1 but is not on
    # it shows that TLS verifies the typed name, not the address connected to.
    other = Reach(restricted=True, allowed=LOOPBACK, resolve=resolver(["127.0.0.1"]))
    mismatch = test_connection(dovecot.settings(mail_user, protocol, security, host="mail.acme.test", reach=other))
    if security == "none":
        assert mismatch.ok, mismatch.message
    else:
        assert (mismatch.ok, mismatch.kind) == (False, "tls")
        assert "does not match that name" in mismatch.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(dovecot, mail_user, protocol):
    # The first answer passes the check; a rebinding DNS would answer with the metadata service next.
    rebinding = resolver(["127.0.0.1"], ["169.254.169.254"])
    reach = Reach(restricted=True, allowed=LOOPBACK, resolve=rebinding)
    # mail.rebind.test resolves nowhere else: connecting at all means connecting to the checked address.
    result = test_connection(dovecot.settings(mail_user, protocol, host="mail.rebind.test", reach=reach))
    assert result.ok, result.message
    assert rebinding.calls == ["mail.rebind.test"]


def test_smtp_is_held_to_the_same_rule(smtp_server):
    with pytest.raises(SmtpError) as caught:
        check_connection(smtp_server.settings("none", reach=Reach(restricted=True)))
    assert (caught.value.kind, caught.value.temporary) == ("connect", False)
    assert caught.value.message.startswith("127.0.0.1 cannot be used as a server here: it is an address of this "
                                           "machine itself (loopback).")
    for security in ("none", "starttls", "ssl"):
        rebinding = resolver(["127.0.0.1"], ["169.254.169.254"])
        allowed = Reach(restricted=True, allowed=LOOPBACK, resolve=rebinding)
        assert check_connection(smtp_server.settings(security, login=True, host="localhost", reach=allowed))
        assert rebinding.calls == ["localhost"]
    mismatch = Reach(restricted=True, allowed=LOOPBACK, resolve=resolver(["127.0.0.1"]))
    for security in ("starttls", "ssl"):
        with pytest.raises(SmtpError) as caught:
            check_connection(smtp_server.settings(security, host="smtp.acme.test", reach=mismatch))
        assert caught.value.kind == "tls" and "does not match that name" in caught.value.message


# --- answers from servers that are not what was asked for -----------------------------------------

JUNK = {
    "nats": b'INFO {"server_id":"NDQ3","version":"2.10.7","secret_cluster":"prod-eu"}\r\n',
    "mariadb": b"J\x00\x00\x00\n11.4.2-MariaDB-internal\x00\x08\x00\x00\x00<salty>\x00",
}


@pytest.fixture(params=sorted(JUNK))
def stranger(request):
    """A loopback service that answers every connection with its own banner."""
    junk = JUNK[request.param]
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(junk)
                    conn.settimeout(1)
                    conn.recv(1024)
                    conn.sendall(junk)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], junk
    stop.set()
    listener.close()


def _traces(junk: bytes) -> list[str]:
    return ["NATS", "server_id", "MariaDB", "salty", "secret_cluster", junk[:6].decode("latin-1")]


@pytest.mark.parametrize(("protocol", "name"), [("imap", "an IMAP"), ("pop3", "a POP3"), ("smtp", "an SMTP")])
def test_a_strangers_banner_is_classified_not_echoed(stranger, protocol, name, caplog):
    port, junk = stranger
    caplog.set_level(logging.INFO, logger="portal.transport")
    if protocol == "smtp":
        from portal.transport.smtp import SmtpSettings

        with pytest.raises(SmtpError) as caught:
            check_connection(SmtpSettings("127.0.0.1", port, "none", timeout=3))
        message = caught.value.message
    else:
        message = test_connection(ServerSettings(protocol, "127.0.0.1", port, "none", "u", "pw", timeout=3)).message
    assert message == f"127.0.0.1:{port} does not answer like {name} server (is the port right?)"
    for trace in _traces(junk):
        assert trace not in message
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"does not answer like {name} server; it said" in logged
    if junk is JUNK["nats"]:
        assert '"server_id":"NDQ3"' in logged  # the operator can see who answered
