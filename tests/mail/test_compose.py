"""Outbound composition, checked on what a real SMTP server (aiosmtpd) receives."""
from __future__ import annotations

import email
import hashlib
import re
import uuid
from email import policy
from email.header import decode_header, make_header

import pytest

from portal.mail.compose import (AUTO_GENERATED, AUTO_REPLIED, LOOP_HEADER, MAX_REFERENCES, AddressError,
                                 FileAttachment, InlineImage, compose, parse_address, references_chain)
from portal.mail.refs import REPLY_MARKER, RefFormat, ticket_uuid_from_message_id
from portal.mail.render import RenderedEmail, load_default, render, sample_context
from portal.transport.smtp import send


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = b"test-secret"
HOST = "tidemark.harbor-it.example"
TICKET_UUID = uuid.UUID("317c5c2b-c8dd-40ae-a44b-d6adbaeb7bb1")
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
FMT = RefFormat()


def _rendered(event: str = "ticket_created") -> RenderedEmail:
    return render(load_default(event), sample_context())


def _compose(rendered=None, **overrides):
    values = dict(
        from_address="support@harbor-it.example", from_name="Harbor IT Support",
        to=["Anna Müller <anna.mueller@northwind.example>"], host=HOST,
        ticket_ref="T-1042", ticket_uuid=TICKET_UUID, secret=SECRET,
    )
    values.update(overrides)
    return compose(rendered or _rendered(), **values)


def _deliver(smtp_server, message, **kwargs):
    send(smtp_server.settings(), message, **kwargs)
    received = smtp_server.last()
    return received, received.message


def _head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def _decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


def test_everything_arrives(smtp_server):
    message = _compose(
        from_name="Harbor IT — Süpport, Team",
        cc=["Bob <bob@northwind.example>"],
        plus_mode="mixed",
        in_reply_to="<CAF=orig@mail.northwind.example>",
        references=["<root@mail.northwind.example>"],
        automatic=AUTO_REPLIED,
        attachments=[FileAttachment("Bericht März.pdf", PDF, "application/pdf")],
        inline_images=[InlineImage("logo-1@tidemark", PNG, "image/png", "logo.png")],
        rendered=RenderedEmail(_rendered().subject, _rendered().text,
                               _rendered().html.replace("</h1>", '</h1><img src="cid:logo-1@tidemark" alt="">')),
    )
    received, msg = _deliver(smtp_server, message)
    raw = received.data
    assert _head(raw).isascii(), "headers must be plain ASCII (RFC 2047), no SMTPUTF8 needed"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert sorted(received.rcpt_tos) == ["anna.mueller@northwind.example", "bob@northwind.example"]
    assert received.mail_from == "support@msp.example"  # the server settings' envelope sender

    # Names and subject, encoded on the wire and exact once decoded.
    assert msg["From"].addresses[0].display_name == "Harbor IT — Süpport, Team"
    assert msg["From"].addresses[0].addr_spec == "support@harbor-it.example"
    assert msg["To"].addresses[0].display_name == "Anna Müller"
    assert b"=?utf-8?" in _head(raw)
    assert msg["Subject"] == "Re: [T-1042] Printer on the 2nd floor prints blank pages"
    assert msg["Cc"].addresses[0].addr_spec == "bob@northwind.example"

    # Threading: our Message-ID with the ticket uuid, the conversation's ids, never encoded.
    assert ticket_uuid_from_message_id(msg["Message-ID"], HOST) == str(TICKET_UUID)
    assert msg["In-Reply-To"] == "<CAF=orig@mail.northwind.example>"
    assert msg["References"].split() == ["<root@mail.northwind.example>", "<CAF=orig@mail.northwind.example>"]
    assert msg["Date"] is not None and msg["Date"].datetime.tzinfo is not None

    # Reply-To carries the signed plus tag; inbound recognises it.
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("support+T-1042.")
    assert FMT.refs_in_recipients([reply_to], SECRET) == ["T-1042"]

    # RFC 3834 and our loop header.
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Precedence"] == "auto_reply"
    assert msg[LOOP_HEADER] == HOST

    # Structure: mixed > alternative > (plain, related > (html, image)), attachment.
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = msg.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    text, html = plain.get_content(), html_part.get_content()

    # Marker and token in both parts, found by the inbound token reader.
    assert text.startswith(REPLY_MARKER)
    assert REPLY_MARKER in html
    assert FMT.refs_in_tokens(text, SECRET) == ["T-1042"]
    assert FMT.refs_in_tokens(html, SECRET) == ["T-1042"]
    assert "Anna Müller" in text and "Anna Müller" in html

    # Inlined CSS: styles sit on the elements; only the dark-mode block stays a <style>.
    assert re.search(r'<td class="card"[^>]*style="[^"]*background-color: #fbfcfd', html)
    assert all('data-css-inline="keep"' in attrs for attrs in re.findall(r"<style([^>]*)>", html))

    # The inline image and the attachment, byte for byte.
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<logo-1@tidemark>"
    assert image.get_content_disposition() == "inline"
    assert 'src="cid:logo-1@tidemark"' in html
    assert hashlib.sha256(image.get_content()).digest() == hashlib.sha256(PNG).digest()
    assert attachment.get_filename() == "Bericht März.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert hashlib.sha256(attachment.get_content()).hexdigest() == hashlib.sha256(PDF).hexdigest()


def test_bodies_are_7bit_safe_and_lines_short(smtp_server):
    long_line = "Grüße " + "x" * 3000
    rendered = RenderedEmail("Ünïcödé subject — ✓", f"{long_line}\n", f"<p>{long_line}</p>")
    received, msg = _deliver(smtp_server, _compose(rendered))
    assert received.data.isascii()
    head, body = received.data.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in body.split(b"\r\n")) <= 78
    # Only an unbreakable msg-id may exceed 78 columns in the head.
    assert all(len(line) <= 78 or b"<" in line for line in head.split(b"\r\n"))
    plain, html = msg.get_payload()
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert long_line in plain.get_content() and long_line in html.get_content()
    assert msg["Subject"] == "[T-1042] Ünïcödé subject — ✓"
    assert "=?utf-8?" in re.search(rb"Subject:(.*?)\r\n(?! )", received.data, re.S).group(1).decode()


def test_ascii_text_stays_readable(smtp_server):
    rendered = RenderedEmail("Plain", "Hello there\n", None)
    received, msg = _deliver(smtp_server, _compose(rendered))
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert b"Hello there\r\n\r\n[ref:T-1042." in received.data


def test_notifications_are_auto_generated_and_bulk(smtp_server):
    _, msg = _deliver(smtp_server, _compose(_rendered("note_added"), automatic=AUTO_GENERATED))
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Precedence"] == "bulk"
    assert msg["X-Auto-Response-Suppress"] == "All"


def test_a_technicians_reply_is_not_automatic_but_carries_the_loop_header(smtp_server):
    _, msg = _deliver(smtp_server, _compose(_rendered("reply")))
    assert msg["Auto-Submitted"] is None and msg["Precedence"] is None
    assert msg["X-Auto-Response-Suppress"] is None
    assert msg[LOOP_HEADER] == HOST
    assert msg["Reply-To"] is None  # plus mode off


def test_plus_tag_in_from(smtp_server):
    _, msg = _deliver(smtp_server, _compose(plus_mode="only", plus_in="from"))
    sender = msg["From"].addresses[0]
    assert sender.display_name == "Harbor IT Support"
    assert FMT.refs_in_recipients([sender.addr_spec], SECRET) == ["T-1042"]
    assert msg["Reply-To"] is None


def test_plus_tag_on_a_separate_reply_to(smtp_server):
    _, msg = _deliver(smtp_server, _compose(plus_mode="mixed", reply_to="helpdesk@harbor-it.example"))
    assert msg["Reply-To"].addresses[0].addr_spec.startswith("helpdesk+T-1042.")


def test_embedded_images_instead_of_cid_parts(smtp_server):
    rendered = RenderedEmail("S", "text\n", '<html><body><img src="cid:pic1"></body></html>')
    _, msg = _deliver(smtp_server, _compose(rendered, embed_images=True,
                                            inline_images=[InlineImage("pic1", PNG, "image/png")]))
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_payload()[1].get_content()
    assert "cid:" not in html and 'src="data:image/png;base64,' in html
    assert FMT.refs_in_tokens(html, SECRET) == ["T-1042"]
    assert html.index("[ref:") < html.index("</body>")


def test_references_are_capped_keeping_root_and_latest(smtp_server):
    ids = [f"<{uuid.uuid4()}.{uuid.uuid4()}@{HOST}>" for _ in range(50)]
    received, msg = _deliver(smtp_server, _compose(references=ids[:-1], in_reply_to=ids[-1]))
    chain = msg["References"].split()
    assert len(chain) == MAX_REFERENCES
    assert chain[0] == ids[0] and chain[-1] == ids[-1] and chain[1:] == ids[-(MAX_REFERENCES - 1):]
    head = _head(received.data).decode()
    assert "=?" not in re.search(r"References:.*?\r\n(?! )", head + "\r\n", re.S).group(0)
    assert all(len(line) <= 998 for line in head.split("\r\n"))


def test_references_chain_cleans_input():
    assert references_chain("<a@x> junk <b@x>", "c@x") == ["<a@x>", "<b@x>", "<c@x>"]
    assert references_chain(["<a@x>", "<a@x>"], "<a@x>") == ["<a@x>"]
    assert references_chain(None, None) == []


def test_without_a_ticket(smtp_server):
    _, msg = _deliver(smtp_server, compose(_rendered("mailbox_failing"), from_address="tidemark@harbor-it.example",
                                           to="ops@harbor-it.example", host=HOST, automatic=AUTO_GENERATED))
    assert msg["Subject"] == "Mailbox support@harbor-it.example is failing"
    assert msg["Message-ID"].endswith(f"@{HOST}>")
    assert "[ref:" not in msg.get_payload()[0].get_content()


def test_duplicate_recipients_are_dropped():
    msg = _compose(to=["a@x.example", "A@X.example"], cc=["a@x.example", "c@x.example"])
    assert [a.addr_spec for a in msg["To"].addresses] == ["a@x.example"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["c@x.example"]


@pytest.mark.parametrize("bad", ["bob@", "no-at-sign", "a@localhost", "a b@x.example", "a@-x.example",
                                 "a@@x.example", "", "Ünï@x.example", "a@x..example"])
def test_bad_addresses_are_refused_in_plain_words(bad):
    with pytest.raises(AddressError) as info:
        _compose(to=[bad])
    assert "address" in str(info.value) or "domain" in str(info.value)


def test_address_forms():
    assert parse_address('"Müller, Anna" <anna@x.example>').display_name == "Müller, Anna"
    assert parse_address("Müller, Anna <anna@x.example>").display_name == "Müller, Anna"
    assert parse_address(("Bob", "bob@x.example")).addr_spec == "bob@x.example"
    assert parse_address("anna@bücher.example").addr_spec == "anna@xn--bcher-kva.example"
    assert "\n" not in parse_address("Evil\r\nBcc: x <a@x.example>").display_name
    with pytest.raises(AddressError):
        parse_address(("Evil\r\nBcc: x", "a@x.example"))


def test_no_recipient_and_bad_options():
    with pytest.raises(AddressError):
        _compose(to=[])
    with pytest.raises(ValueError):
        _compose(plus_mode="sometimes")
    with pytest.raises(ValueError):
        _compose(automatic="yes")
    with pytest.raises(ValueError):
        _compose(secret=None)


def test_subject_newlines_cannot_inject_headers():
    msg = _compose(RenderedEmail("Hi\r\nBcc: victim@example.com", "x\n", None))
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[T-1042] Hi Bcc: victim@example.com"


def test_message_round_trips_through_the_parser():
    raw = _compose(attachments=[FileAttachment("a.txt", b"hello\n", "text/plain")]).as_bytes()
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"].startswith("Re: [T-1042]")
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.txt"]
