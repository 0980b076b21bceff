"""portal.mail.parse.parts.clean_base64: the same bytes as the stdlib's get_payload(decode=True)
wherever it answers, without the stdlib's copies of the encoded text."""

from __future__ import annotations

import base64
import tracemalloc
from email import policy
from email.message import Message

from hypothesis import given
from hypothesis import strategies as st

from portal.mail.parse.parts import _payload_bytes, clean_base64
from tests.fuzzing import fuzz


def part(payload: str, cte: str = "base64") -> Message:
    msg = Message(policy=policy.compat32)
    msg["Content-Type"] = "application/octet-stream"
    msg["Content-Transfer-Encoding"] = cte
    msg.set_payload(payload)
    return msg


@st.composite
def encoded(draw) -> str:
    """Base64 as mail carries it: wrapped at some width with CRLF or LF, and now and then
    damaged (a character outside the alphabet, padding lost or doubled, a stray '=')."""
    text = base64.b64encode(draw(st.binary(max_size=300))).decode()
    width = draw(st.integers(1, 80))
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    text = eol.join(text[i:i + width] for i in range(0, len(text), width)) + draw(st.sampled_from(["", eol]))
    damage = draw(st.sampled_from(["none", "none", "char", "unpad", "pad", "equals"]))
    if damage != "none" and text:
        at = draw(st.integers(0, len(text)))
        if damage == "char":
            text = text[:at] + draw(st.sampled_from(list("!*. -_é\t"))) + text[at:]
        elif damage == "unpad":
            text = text.rstrip("\r\n=")
        elif damage == "pad":
            text += "=="
        else:
            text = text[:at] + "=" + text[at:]
    return text


@fuzz(600)
@given(encoded())
def test_decoded_as_the_stdlib_decodes_it_or_left_to_it(payload):
    msg = part(payload)
    fast = clean_base64(msg)
    assert fast is None or fast == msg.get_payload(decode=True)
    assert _payload_bytes(msg, None) == msg.get_payload(decode=True)


def test_clean_mail_takes_the_direct_way_and_anything_odd_the_stdlibs():
    text = base64.encodebytes(bytes(range(256)) * 4).decode().replace("\n", "\r\n")
    assert clean_base64(part(text)) == bytes(range(256)) * 4
    assert clean_base64(part("QUJD\r\nRA==\r\n")) == b"ABCD"
    assert clean_base64(part("QUJDRA")) is None  # padding missing: the stdlib repairs and notes it
    assert clean_base64(part("QU*JD")) is None  # a character outside the alphabet
    assert clean_base64(part("QUJD", cte="quoted-printable")) is None
    assert clean_base64(part("QUJD", cte=" base64")) is None  # the stdlib does not decode that either


def test_a_large_attachment_is_decoded_without_copies_of_its_text():
    raw = bytes(range(256)) * (12 * 4096)  # 12 MB
    msg = part(base64.encodebytes(raw).decode().replace("\n", "\r\n"))
    encoded_size = len(msg._payload)
    tracemalloc.start()
    try:
        data = _payload_bytes(msg, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == raw
    # The decoded bytes (3/4 of the text), and not the stdlib's bytes, lines and join of the text.
    assert peak < len(raw) + encoded_size / 4, (peak, encoded_size)
