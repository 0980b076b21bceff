import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.mail.parse import parse_email, parse_file
from tests.fuzzing import fuzz
from tests.mail.conftest import build


def test_headers_are_decoded_and_addresses_read_from_header_objects():
    raw = build({
        "From": "=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@customer.example>",
        "To": '"Support, Desk" <support@msp.example>, second@msp.example',
        "Cc": "Bob <bob@customer.example>",
        "Reply-To": "replies@customer.example",
        "Subject": "=?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=",
        "Message-ID": "<abc.123@customer.example>",
        "In-Reply-To": "<parent@msp.example>",
        "References": "<root@msp.example>\n <parent@msp.example>",
        "Return-Path": "<bounces@customer.example>",
        "Date": "Tue, 02 Jan 2024 10:11:12 +0100",
    })
    p = parse_email(raw)
    assert p.subject == "Grüße aus Köln"
    assert (p.from_.name, p.from_.address) == ("Jörg Müller", "joerg@customer.example")
    assert [(a.name, a.address) for a in p.to] == [("Support, Desk", "support@msp.example"), ("", "second@msp.example")]
    assert [a.address for a in p.cc] == ["bob@customer.example"]
    assert [a.address for a in p.reply_to] == ["replies@customer.example"]
    assert p.message_id == "<abc.123@customer.example>"
    assert p.in_reply_to == "<parent@msp.example>"
    assert p.references == ["<root@msp.example>", "<parent@msp.example>"]
    assert p.return_path == "bounces@customer.example"
    assert p.date.utcoffset().total_seconds() == 3600
    assert p.text == "Hello\n"
    assert p.defects == []


@pytest.mark.parametrize("value", [None, "", "not a date", "Mon, 99 Foo 2024 99:99:99 +9999"])
def test_missing_or_broken_date_is_none(value):
    headers = {"Subject": "x"}
    if value is not None:
        headers["Date"] = value
    assert parse_email(build(headers)).date is None


def test_date_without_zone_is_utc_not_naive():
    p = parse_email(build({"Date": "Tue, 02 Jan 2024 10:11:12 -0000"}))
    assert p.date.tzinfo is not None and p.date.utcoffset().total_seconds() == 0


def test_null_return_path_is_empty_string():
    assert parse_email(build({"Return-Path": "<>"})).return_path == ""
    assert parse_email(build({})).return_path is None


def test_broken_address_header_is_recovered_with_a_defect():
    p = parse_email(build({"From": '"your secret past" <power quadrant system@example.com>'}))
    assert p.from_.address == "powerquadrantsystem@example.com"
    assert any(d.startswith("from:") for d in p.defects)


def test_display_name_that_looks_like_an_address_keeps_the_real_one():
    p = parse_email(build({"From": "alice@example.com <bob@example.com>"}))
    assert p.from_.address == "bob@example.com"


def test_comment_form_name():
    p = parse_email(build({"From": "marc@example.com (Marc Smith)"}))
    assert (p.from_.name, p.from_.address) == ("Marc Smith", "marc@example.com")


def test_missing_from_falls_back_to_reply_to():
    raw = b"To: support@msp.example\nReply-To: <who@customer.example>\nSubject: x\n\nbody\n"
    p = parse_email(raw)
    assert p.from_.address == "who@customer.example"
    assert any("no usable From" in d for d in p.defects)


def test_bogus_declared_charset_falls_back_to_detection():
    body = "Grüße aus Köln, bitte helfen Sie uns mit dem Drucker.\n".encode("utf-8")
    raw = build({"Content-Type": "text/plain; charset=x-bogus-charset", "Content-Transfer-Encoding": "8bit"}, body)
    p = parse_email(raw)
    assert p.text == body.decode("utf-8")
    assert any("x-bogus-charset" in d for d in p.defects)


def test_mislabelled_charset_is_repaired():
    body = "Le montant débité est trop élevé, merci de vérifier.\n".encode("utf-8")
    raw = build({"Content-Type": "text/plain; charset=us-ascii", "Content-Transfer-Encoding": "8bit"}, body)
    assert parse_email(raw).text == body.decode("utf-8")


def test_latin1_label_decodes_windows_1252_quotes():
    raw = build({"Content-Type": "text/plain; charset=iso-8859-1", "Content-Transfer-Encoding": "8bit"},
                "the \u201cexport\u201d costs \u20ac 5\n".encode("cp1252"))
    assert parse_email(raw).text == "the \u201cexport\u201d costs \u20ac 5\n"


def test_raw_8bit_subject_uses_the_body_charset():
    raw = (b"From: a@b.example\nSubject: Gr\xfc\xdfe\nContent-Type: text/plain; charset=iso-8859-1\n\nx\n")
    assert parse_email(raw).subject == "Grüße"


def test_gb2312_encoded_word_with_gbk_characters():
    # 內 is not in GB2312 but senders label GBK text GB2312 anyway.
    word = "內應力".encode("gbk")
    import base64
    raw = build({"Subject": f"=?GB2312?B?{base64.b64encode(word).decode()}?="})
    assert parse_email(raw).subject == "內應力"


def test_html_only_gets_a_text_body_and_a_safe_html():
    html = ('<html><body><p onclick="steal()">Hello <b>there</b></p>'
            '<script>alert(1)</script><a href="javascript:alert(2)">x</a>'
            '<img src="cid:logo@x"><img src="https://tracker.example/p.gif"></body></html>')
    p = parse_email(build({"Content-Type": "text/html; charset=utf-8"}, html))
    assert p.text_from_html and "Hello there" in p.text
    safe = p.html_safe
    assert "script" not in safe and "onclick" not in safe and "javascript" not in safe
    assert 'src="cid:logo@x"' in safe
    assert "tracker.example" not in safe


def _multipart(parts: list[str], boundary: str = "BOUND", ctype: str = "multipart/mixed") -> bytes:
    body = "".join(f"--{boundary}\n{part}\n" for part in parts) + f"--{boundary}--\n"
    return build({"Content-Type": f'{ctype}; boundary="{boundary}"', "MIME-Version": "1.0"}, body)


def test_attachments_have_decoded_names_hashes_and_inline_flag():
    raw = _multipart([
        "Content-Type: text/plain; charset=utf-8\n\nSee attached.",
        "Content-Type: application/pdf\nContent-Disposition: attachment;\n"
        " filename*=utf-8''r%C3%A9sum%C3%A9.pdf\nContent-Transfer-Encoding: base64\n\nSGVsbG8gUERG",
        "Content-Type: image/png\nContent-ID: <logo@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=",
    ])
    p = parse_email(raw)
    assert p.text == "See attached."
    pdf, png = p.attachments
    assert (pdf.filename, pdf.content_type, pdf.size, pdf.inline) == ("résumé.pdf", "application/pdf", 9, False)
    assert pdf.data == b"Hello PDF"
    import hashlib
    assert pdf.sha256 == hashlib.sha256(b"Hello PDF").hexdigest()
    assert png.content_id == "logo@x" and png.inline and png.generated_name


def test_octet_stream_gets_its_type_from_the_name():
    raw = _multipart(["Content-Type: text/plain\n\nx",
                      'Content-Type: application/octet-stream; name="invoice.pdf"\n\n%PDF'])
    assert parse_email(raw).attachments[0].content_type == "application/pdf"


def test_uuencoded_attachment_keeps_its_name():
    import binascii
    line = binascii.b2a_uu(b"Hello Tidemark").decode()
    raw = _multipart(["Content-Type: text/plain\n\nbody",
                      f"Content-Type: application/msword\nContent-Transfer-Encoding: x-uuencode\n\n"
                      f"begin 644 notes.txt\n{line}`\nend"])
    att = parse_email(raw).attachments[0]
    assert (att.filename, att.data) == ("notes.txt", b"Hello Tidemark")


def test_format_flowed_is_joined():
    raw = build({"Content-Type": "text/plain; charset=utf-8; format=flowed"},
                "First line \ncontinued \nand so on\n-- \nSig\n")
    assert parse_email(raw).text.startswith("First line continued and so on\n-- \nSig")


def test_crlf_bodies_become_lf():
    raw = build({"Content-Type": "text/plain"}, "a\nb\n", crlf=True)
    assert parse_email(raw).text == "a\nb\n"


def test_delivery_status_is_an_attachment_not_body_text():
    raw = _multipart([
        "Content-Type: text/plain\n\nDelivery failed.",
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; gone@customer.example\nAction: failed\nStatus: 5.1.1",
    ], ctype="multipart/report; report-type=delivery-status")
    p = parse_email(raw)
    assert p.text == "Delivery failed."
    report = p.attachments[0]
    assert report.content_type == "message/delivery-status" and b"gone@customer.example" in report.data


def test_forwarded_message_is_an_eml_attachment():
    inner = "From: x@y.example\nSubject: Original one\n\nHello there!"
    p = parse_email(_multipart(["Content-Type: text/plain\n\nFYI", f"Content-Type: message/rfc822\n\n{inner}"]))
    att = p.attachments[0]
    assert att.filename == "Original one.eml"
    assert parse_email(att.data).text.strip() == "Hello there!"


def test_banner_line_before_headers_is_repaired():
    raw = (b"---- Original email message ----\nFrom: a@b.example\nTo: c@d.example\nX-Spam: a,\n"
           b"continued without indent\nSubject: Contact\n\nbody\n")
    p = parse_email(raw)
    assert p.subject == "Contact" and p.to[0].address == "c@d.example"
    assert any("repaired" in d for d in p.defects)


def _tnef_attr(level: int, name: int, typ: int, data: bytes) -> bytes:
    return bytes([level]) + struct.pack("<HHI", name, typ, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def test_winmail_dat_is_unpacked():
    tnef = struct.pack("<IH", 0x223E9F78, 1)
    tnef += _tnef_attr(1, 0x9006, 0x0007, struct.pack("<I", 0x00010000))  # TNEF version
    tnef += _tnef_attr(2, 0x9002, 0x0006, b"\x00" * 14)  # attachment starts
    tnef += _tnef_attr(2, 0x8010, 0x0001, b"report.txt\x00")
    tnef += _tnef_attr(2, 0x800F, 0x0006, b"TNEF content")
    import base64
    raw = _multipart(["Content-Type: text/plain\n\nSee winmail",
                      "Content-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n"
                      + base64.b64encode(tnef).decode()])
    p = parse_email(raw)
    assert [(a.filename, a.data) for a in p.attachments] == [("report.txt", b"TNEF content")]


def test_oversized_message_gives_headers_only():
    raw = build({"Subject": "Big one", "Message-ID": "<big@x>"}, "x" * 5000)
    p = parse_email(raw, max_size=1000)
    assert p.headers_only and p.subject == "Big one" and p.message_id == "<big@x>"
    assert p.text == "" and p.attachments == []
    assert any("limit" in d for d in p.defects)


def test_oversized_file_is_not_read_whole(tmp_path):
    path = tmp_path / "big.eml"
    path.write_bytes(build({"Subject": "Huge"}, "y" * 3_000_000))
    p = parse_file(path, max_size=2_000_000)
    assert p.headers_only and p.subject == "Huge" and p.raw_size == path.stat().st_size


def test_deep_nesting_does_not_raise():
    n = 3000
    body = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(n))
    raw = b"From: a@b.example\nSubject: deep\n" + body.encode() + b"Content-Type: text/plain\n\nhi\n"
    p = parse_email(raw)
    assert p.subject == "deep" and p.defects


def test_garbage_never_raises():
    for raw in (b"", b"\x00\xff" * 100, b"Subject: =?x?q?broken", "é".encode("latin-1") * 10, b"\n\n\n"):
        p = parse_email(raw)
        assert isinstance(p.text, str)


def test_in_reply_to_without_brackets_is_kept():
    assert parse_email(build({"In-Reply-To": "abc@msp.example"})).in_reply_to == "<abc@msp.example>"


def test_body_without_separator_is_not_swallowed_into_a_header():
    raw = b"From: a@b.example\nSubject: Printer\nHello, the printer is broken\nThanks\n\nMore text\n"
    p = parse_email(raw)
    assert p.subject == "Printer"


def test_ids_folded_into_encoded_words_are_read():
    # What Python's own generator writes for a long In-Reply-To: RFC 2047 words in an id header.
    long_id = "<109ee639-2849-433b-85d6-190a2c168ea3.d72ea85c-c0f7-4a48-8c62-a8db500fd4d1@tidemark.test>"
    raw = (b"From: a@b.example\r\nSubject: x\r\nMessage-ID: <m@b.example>\r\n"
           b"In-Reply-To: =?utf-8?q?=3C109ee639-2849-433b-85d6-190a2c168ea3=2Ed72ea85c-c0?=\r\n"
           b" =?utf-8?q?f7-4a48-8c62-a8db500fd4d1=40tidemark=2Etest=3E?=\r\n"
           b"References: <first@b.example> =?utf-8?q?=3C109ee639-2849-433b-85d6-190a2c168ea3=2Ed72ea85c-c0f?=\r\n"
           b" =?utf-8?q?7-4a48-8c62-a8db500fd4d1=40tidemark=2Etest=3E?=\r\n\r\nbody\r\n")
    parsed = parse_email(raw)
    assert parsed.in_reply_to == long_id
    assert parsed.references == ["<first@b.example>", long_id]


# --- the everyday address forms read without the stdlib's full parser ---------------------------

_ADDRESS_PIECES = st.sampled_from([
    "a", "Bob", "o'neil", "x.y", "..", ".", "-", "_", "=?utf-8?q?J=C3=A9?=", "@", "<", ">", ",", ";", ":",
    '"', '\\"', "(", ")", " ", "  ", "\t", "é", "example.com", "ex-ample.org", "[1.2.3.4]", "+tag", "!#$%&*/=?^`{|}~",
])


_words = st.lists(_ADDRESS_PIECES, min_size=1, max_size=4).map("".join)
_mailbox = st.one_of(
    st.tuples(_words, _words).map(lambda p: f"{p[0]}@{p[1]}"),
    st.tuples(_words, _words, _words).map(lambda p: f"{p[0]} <{p[1]}@{p[2]}>"),
    st.tuples(_words, _words, _words).map(lambda p: f'"{p[0]}" <{p[1]}@{p[2]}>'),
)
_address_header = st.tuples(st.lists(_mailbox, min_size=1, max_size=3),
                            st.sampled_from([",", ", ", " ,", ",,", " "])).map(lambda p: p[1].join(p[0]))


@fuzz(3000)
@given(_address_header)
def test_plain_address_reading_agrees_with_the_full_parser(raw):
    from portal.mail.parse.headers import _plain_addresses, _structured_addresses

    plain = _plain_addresses(raw)
    if plain is not None:
        assert plain == _structured_addresses("to", raw)


@pytest.mark.parametrize("raw, expected", [
    ("alice@example.com", [("", "alice@example.com")]),
    ("Alice Smith <alice@example.com>", [("Alice Smith", "alice@example.com")]),
    ('"Smith, Alice" <alice@example.com>, bob@example.org', [("Smith, Alice", "alice@example.com"),
                                                               ("", "bob@example.org")]),
    ("Alice   Smith\t<alice@example.com> ,", [("Alice Smith", "alice@example.com")]),
])
def test_plain_address_forms_take_the_fast_reading(raw, expected):
    from portal.mail.parse.headers import _plain_addresses

    assert [(a.name, a.address) for a in _plain_addresses(raw)] == expected


@pytest.mark.parametrize("raw", [
    "alice@example.com (Alice)", "Team: a@example.com, b@example.com;", "=?utf-8?q?J=C3=A9?= <j@example.com>",
    'Al "the" Smith <a@example.com>', "José <j@example.com>", "a@example.com,, b@example.com", "<a@[1.2.3.4]>",
])
def test_other_address_forms_go_to_the_full_parser(raw):
    from portal.mail.parse.headers import _plain_addresses

    assert _plain_addresses(raw) is None


def _related_mail(**headers: str) -> bytes:
    """HTML showing two images by cid: whose parts say `attachment`, and a third it does not show."""
    html = ('<p>The error:</p><img src="cid:shot@x" alt="screenshot">'
            '<img src="cid:logo%40corp">')
    related = _multipart([
        "Content-Type: multipart/alternative; boundary=ALT\n\n"
        "--ALT\nContent-Type: text/plain\n\nThe error: [image]\n"
        f"--ALT\nContent-Type: text/html\n\n{html}\n--ALT--",
        'Content-Type: image/png\nContent-Disposition: attachment; filename="shot.png"\n'
        "Content-ID: <shot@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=",
        'Content-Type: image/gif\nContent-Disposition: attachment; filename="logo.gif"\n'
        "Content-ID: <logo@corp>\nContent-Transfer-Encoding: base64\n\nR0lGODlh",
        'Content-Type: image/png\nContent-Disposition: attachment; filename="unused.png"\n'
        "Content-ID: <unused@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=",
    ], boundary="REL", ctype="multipart/related")
    if not headers:
        return related
    head, _, body = related.partition(b"\n\n")
    kept = [line for line in head.split(b"\n") if not line.lower().startswith((b"from:", b"to:"))]
    extra = [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\n".join(extra + kept) + b"\n\n" + body


def test_a_part_the_html_shows_by_content_id_is_inline_whatever_its_disposition():
    p = parse_email(_related_mail())
    found = {a.filename: (a.content_id, a.inline) for a in p.attachments}
    assert found == {"shot.png": ("shot@x", True), "logo.gif": ("logo@corp", True),  # cid: may be %-encoded
                     "unused.png": ("unused@x", False)}  # not in the HTML: an attachment as it says
