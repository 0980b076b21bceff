"""The parser never raises and stays fast on random, mutated and hostile input."""
import time

from hypothesis import given
from hypothesis import strategies as st

from portal.mail.classify import classify
from portal.mail.explain import explain_message
from portal.mail.parse import parse_email
from portal.mail.refs import RefFormat
from tests.fuzzing import fuzz

SEED = (b"From: =?utf-8?q?J=C3=B6rg?= <j@customer.example>\r\nTo: a@b.example, \"X, Y\" <x@y.example>\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nDate: Tue, 02 Jan 2024 10:11:12 +0100\r\n"
        b"Message-ID: <m@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n"
        b"--OUT\r\nContent-Type: multipart/alternative; boundary=\"IN\"\r\n\r\n--IN\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Hall=C3=B6 =\r\nWelt\r\n--IN\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<p>Hall\xf6</p>\r\n"
        b"--IN--\r\n--OUT\r\nContent-Type: application/pdf; name*=utf-8''r%C3%A9.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--OUT\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\n\r\ninner body\r\n--OUT--\r\n")

# CPU time allowed per message. The hostile cases take 0.5-1 s of CPU alone and twice that with
# two test suites beside them (measured); the blow-ups this guards against (quadratic work on
# 20,000 recipients or 10,000 nested parts) would cost orders of magnitude more, so the bound
# sits far from both.
BOUND_SECONDS = 10.0


def check(raw: bytes) -> None:
    started = time.process_time()
    parsed = parse_email(raw)
    classify(parsed)
    assert isinstance(parsed.text, str) and isinstance(parsed.defects, list)
    parsed.text.encode("utf-8")  # no lone surrogates reach the database
    parsed.subject.encode("utf-8")
    assert time.process_time() - started < BOUND_SECONDS


@fuzz(150)
@given(st.binary(max_size=4000))
def test_random_bytes(raw):
    check(raw)


@st.composite
def mutated(draw):
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "cut":
            data = data[:pos]
        elif op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"--OUT", b"--IN--", b"\r\n\r\n", b"=?", b"?=", b"=\r\n",
                                                  b"boundary=\"", b"\xff\xfe", b":", b"<", b"\"", b"\x00"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        else:
            end = min(len(data), pos + draw(st.integers(1, 200)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 20))
    return bytes(data)


@fuzz(200)
@given(mutated())
def test_mutated_messages(raw):
    check(raw)


@fuzz(60)
@given(st.text(max_size=300), st.text(max_size=300))
def test_random_header_values(subject, sender):
    raw = f"From: {sender}\nTo: {subject}\nSubject: {subject}\nDate: {sender}\n\nbody".encode("utf-8", "surrogatepass")
    check(raw)


def test_ten_thousand_nested_parts():
    n = 10_000
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(n))
    tail = "".join(f"\n--b{i}--" for i in reversed(range(n)))
    check(b"From: a@b.example\nSubject: deep\n" + (head + "Content-Type: text/plain\n\nhi" + tail).encode())


def test_ten_thousand_sibling_parts():
    parts = "".join(f"--S\nContent-Type: text/plain\n\npart {i}\n" for i in range(10_000))
    check(b'From: a@b.example\nContent-Type: multipart/mixed; boundary="S"\n\n' + parts.encode() + b"--S--\n")


def test_huge_headers():
    many_recipients = ", ".join(f"user{i}@customer.example" for i in range(20_000))
    check(f"From: a@b.example\nTo: {many_recipients}\nSubject: {'x' * 500_000}\n\nbody".encode())
    check(b"From: " + b"(" * 50_000 + b"a@b.example\nSubject: x\n\nbody")
    check(b"X-Long: " + b"a" * 2_000_000 + b"\n\nbody")


def test_explain_never_raises_on_garbage():
    result = explain_message(b"\x00\xff" * 1000, file="g", waterlines=["---"], ref_format=RefFormat(), secret=b"k")
    assert result["file"] == "g" and isinstance(result["defects"], list)
