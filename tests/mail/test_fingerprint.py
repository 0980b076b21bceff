from portal.mail.fingerprint import fingerprints
from portal.mail.parse import parse_email

BASE = (b"From: Alice <Alice@Customer.example>\nTo: support@msp.example, Bob <bob@msp.example>\n"
        b"Subject: Printer   broken\nDate: Tue, 02 Jan 2024 10:11:12 +0100\nMessage-ID: <m1@customer.example>\n"
        b"Content-Type: text/plain\n\nIt is broken.\n")


def fp(raw: bytes):
    return fingerprints(raw, parse_email(raw))


def test_same_mail_delivered_twice_matches_on_content_and_envelope():
    first = b"Received: from a by b; Tue, 02 Jan 2024 10:11:13 +0100\nDelivered-To: support@msp.example\n" + BASE
    second = (b"Received: from c by d; Tue, 02 Jan 2024 10:15:00 +0100\nX-Original-To: alias@msp.example\n"
              + BASE.replace(b"\n", b"\r\n").replace(b"Subject: Printer   broken", b"Subject: Printer\r\n broken"))
    a, b = fp(first), fp(second)
    assert a.raw != b.raw
    assert a.content == b.content and a.envelope == b.envelope


def test_recipient_order_and_address_case_do_not_matter():
    swapped = BASE.replace(b"To: support@msp.example, Bob <bob@msp.example>", b"To: BOB@msp.example, support@msp.example")
    assert fp(BASE).content == fp(swapped).content


def test_body_change_changes_content_but_not_envelope():
    other = BASE.replace(b"It is broken.", b"It works again.")
    assert fp(BASE).content != fp(other).content
    assert fp(BASE).envelope == fp(other).envelope


def test_message_id_change_changes_envelope_but_not_content():
    other = BASE.replace(b"<m1@", b"<m2@")
    assert fp(BASE).envelope != fp(other).envelope
    assert fp(BASE).content == fp(other).content


def test_attachments_count():
    with_att = BASE.replace(b"Content-Type: text/plain\n\nIt is broken.\n",
                            b'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\n'
                            b"It is broken.\n--B\nContent-Type: application/pdf\n\n%PDF-1\n--B--\n")
    other = with_att.replace(b"%PDF-1", b"%PDF-2")
    assert fp(with_att).envelope != fp(other).envelope and fp(with_att).content != fp(other).content


def test_fingerprints_are_sha256_hex():
    prints = fp(BASE).as_dict()
    assert set(prints) == {"raw", "content", "envelope"}
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in prints.values())
