import uuid

import pytest

from portal.mail.refs import (REPLY_MARKER, RefFormat, make_message_id, normalize_subject, sign_ref,
                              ticket_uuid_from_message_id)

SECRET = b"installation-secret"


def test_reply_marker_is_a_visible_line():
    assert "reply above this line" in REPLY_MARKER.lower()


def test_subject_refs_default_and_custom_formats():
    assert RefFormat().refs_in_subject("Re: [T-1042] Printer [ t-7 ] T-9") == ["T-1042", "T-7"]
    demo = RefFormat(prefix="DEMO", subject_format="#{ref}")
    assert demo.refs_in_subject("AW: #DEMO-1042 and #demo-3x and [DEMO-5]") == ["DEMO-1042"]
    paren = RefFormat(subject_format="({ref})")
    assert paren.refs_in_subject("(T-12) x [T-13]") == ["T-12"]


def test_subject_with_ref_adds_once():
    f = RefFormat()
    assert f.subject_with_ref("Printer", "T-5") == "[T-5] Printer"
    assert f.subject_with_ref("Re: [T-5] Printer", "T-5") == "Re: [T-5] Printer"


@pytest.mark.parametrize("bad", [{"prefix": "T 1"}, {"prefix": "-T"}, {"subject_format": "no ref"}])
def test_invalid_formats_are_refused(bad):
    with pytest.raises(ValueError):
        RefFormat(**bad)


def test_body_refs_only_in_the_first_5000_characters():
    f = RefFormat()
    assert f.refs_in_body("About [T-1042] and [ T-77 ].\n[t-1042] again") == ["T-1042", "T-77"]
    assert f.refs_in_body("x" * 5000 + " [T-1]") == []
    assert f.refs_in_body("[ABT-1] [XT-2] [T-3a]") == []


def test_body_refs_count_only_in_the_subject_form():
    assert RefFormat().refs_in_body("Model T-800 arrived, see T-1042 and (T-7)") == []
    demo = RefFormat(prefix="DEMO", subject_format="(#{ref})")
    assert demo.refs_in_body("About (#DEMO-5), not [DEMO-6] nor DEMO-7") == ["DEMO-5"]
    # A format without delimiters takes the bare reference, but never a plus-address tag.
    bare = RefFormat(subject_format="{ref}:")
    assert bare.refs_in_body("About T-5: and T-6. and T-7.abcde:") == ["T-5"]
    assert RefFormat(subject_format="{ref}").refs_in_body("T-8 and T-9.abcde") == ["T-8"]


def test_plus_address_round_trip_and_forgery():
    f = RefFormat()
    plus = f.plus_address("support@msp.example", "T-1042", SECRET)
    assert plus.startswith("support+T-1042.") and plus.endswith("@msp.example")
    assert f.refs_in_recipients([plus.upper()], SECRET) == ["T-1042"]  # MTAs may change case
    forged = plus.replace("T-1042", "T-1043")
    assert f.refs_in_recipients([forged], SECRET) == []
    assert f.refs_in_recipients([plus], b"other-secret") == []


def test_token_survives_quoting_and_html():
    f = RefFormat(prefix="DEMO")
    token = f.token("DEMO-7", SECRET)
    assert token == f"[ref:DEMO-7.{sign_ref('DEMO-7', SECRET)}]"
    assert f.refs_in_tokens(f"> > old text\n> {token}\n", SECRET) == ["DEMO-7"]
    assert f.refs_in_tokens(f.token_html("DEMO-7", SECRET), SECRET) == ["DEMO-7"]
    assert f.refs_in_tokens("[ref:DEMO-7.aaaaa]", SECRET) == []
    assert f.refs_in_body(token) == []  # a token is not a plain body reference


def test_signature_is_base32_lowercase_and_short():
    sig = sign_ref("T-1042", SECRET)
    assert len(sig) == 5 and sig == sig.lower() and set(sig) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert sign_ref("t-1042", SECRET) == sig


def test_message_id_carries_the_ticket_uuid():
    ticket = uuid.uuid4()
    mid = make_message_id(ticket, "msp.example")
    assert mid.startswith("<") and mid.endswith("@msp.example>")
    assert ticket_uuid_from_message_id(mid) == str(ticket)
    assert ticket_uuid_from_message_id(mid, host="other.example") is None
    assert ticket_uuid_from_message_id("<abc@msp.example>") is None
    assert make_message_id(ticket, "h") != make_message_id(ticket, "h")


@pytest.mark.parametrize("subject", [
    "Printer broken", "Re: Printer broken", "RE: re: Printer   broken", "AW: WG: Re: Printer broken",
    "Re[2]: Printer broken", "SV: VS: Printer broken", "Antw: Printer broken", "Réf : Printer broken",
    "RV: Printer broken", "R: Printer broken", "Fwd: FW: Printer broken", "TR: Printer broken",
    "Doorst: Printer broken", "Enc: Res: Printer broken", "Odp: Printer broken", "YNT: Printer broken",
    "回复：Printer broken", "转发: Printer broken", "Re: [T-88] Printer broken", "[T-88] Re: Printer broken",
])
def test_normalize_subject(subject):
    assert normalize_subject(subject, RefFormat()) == "printer broken"


def test_normalize_subject_keeps_words_that_only_look_like_prefixes():
    assert normalize_subject("Reunion: plans") == "reunion: plans"
    assert normalize_subject("Rechnung") == "rechnung"
