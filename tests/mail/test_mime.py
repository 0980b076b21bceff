"""split_mime() must build exactly the tree the stdlib feedparser builds, or decline."""
from __future__ import annotations

import email
from email import policy
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.mail.mime import split_mime
from portal.mail.parse import _repair_header_block, parse_email
from tests.corpus import corpora_root
from tests.fuzzing import fuzz


def feedparser_tree(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=policy.compat32)


def assert_same_tree(fast: Message, slow: Message, where: str = "message") -> None:
    assert type(fast) is type(slow), where
    assert fast._headers == slow._headers, where
    assert (fast._unixfrom, fast.preamble, fast.epilogue) == (slow._unixfrom, slow.preamble, slow.epilogue), where
    assert fast.get_default_type() == slow.get_default_type(), where
    assert fast._charset == slow._charset, where
    assert fast.defects == slow.defects == [], where  # only mail without a single defect is taken
    if isinstance(slow._payload, list):
        assert isinstance(fast._payload, list) and len(fast._payload) == len(slow._payload), where
        for i, (a, b) in enumerate(zip(fast._payload, slow._payload)):
            assert_same_tree(a, b, f"{where}.{i}")
    else:
        assert fast._payload == slow._payload, where


def check(raw: bytes) -> bool:
    """True when the fast path took the message (and then built the feedparser's tree)."""
    fast = split_mime(raw)
    if fast is None:
        return False
    assert_same_tree(fast, feedparser_tree(raw))
    return True


def multipart(parts: list[str], *, boundary: str = "b1", preamble: str = "", epilogue: str = "",
              eol: str = "\n", subtype: str = "mixed", close: str = "--") -> bytes:
    head = f"From: a@example.com{eol}Subject: s{eol}MIME-Version: 1.0{eol}" \
           f'Content-Type: multipart/{subtype}; boundary="{boundary}"{eol}{eol}'
    body = preamble + "".join(f"--{boundary}{eol}{part}{eol}" for part in parts) + f"--{boundary}{close}{eol}" + epilogue
    return (head + body).encode("utf-8", "surrogateescape")


TEXT = "Content-Type: text/plain; charset=utf-8\n\nHello\nthere\n"
HTML = "Content-Type: text/html\n\n<p>Hi</p>"


@pytest.mark.parametrize("raw", [
    b"From: a@example.com\nSubject: plain\n\nbody\nlines\n",
    b"From: a@example.com\r\nSubject: crlf\r\n folded\r\n\tagain\r\n\r\nbody\r\n",
    b"From: a@example.com\nSubject:\n  value on the next line\n\n",
    b"From: a@example.com\nX-Empty:\nSubject: \t spaced\n\n\n\nbody after blank lines",
    b"\nno headers at all\n",
    multipart([TEXT, HTML]),
    multipart([TEXT, HTML], eol="\r\n", preamble="This is a preamble.\r\n", epilogue="an epilogue\r\n"),
    multipart([TEXT], preamble="line\n\n", epilogue=""),
    multipart([TEXT], close="--  \t"),
    multipart(["Content-Type: text/plain\n\n--b1X is not a boundary\n --b1 neither\n"]),
    multipart(["Content-Type: text/plain\n\n"]),  # an empty body
    multipart(["\nno part headers\n"]),
    multipart(["Content-Type: multipart/alternative; boundary=inner\n\n"
               "--inner\nContent-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n<b>x</b>\n"
               "--inner--\ninner epilogue\n", TEXT], preamble="pre\n"),
    multipart(["Content-Type: multipart/related; boundary=in2\n\n--in2\n\nx\n--in2--\n"]),
    multipart([TEXT], boundary="=_weird (chars) '+,./:?"),
    multipart(["Content-Type: text/plain\n\ncaf\udce9 8bit bytes\n"]),
])
def test_well_formed_mail_is_split_exactly_as_the_feedparser_does(raw):
    assert check(raw), "the fast path should take this message"


@pytest.mark.parametrize("raw", [
    b"From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\n\nmbox\n",
    b"From: a@example.com\rSubject: lone CR\r\n\r\nbody",
    b"From: a@example.com\nnot a header line\nSubject: x\n\nbody",
    b" continued nothing\nFrom: a@example.com\n\nbody",
    b"From: a@example.com\nSubject : space before the colon\n\nbody",
    b"From: a@example.com\nSubject: headers to the end\n",
    multipart([TEXT], close=""),  # no close boundary
    multipart([TEXT], close="--x"),
    b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b1\n\nno boundary at all\n",
    b"From: a@example.com\nContent-Type: multipart/mixed\n\n--b1\n\nx\n--b1--\n",  # no boundary parameter
    b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b1\n\n--b1\n--b1\n\nx\n--b1--\n",
    b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b1\n\n--b1--\n",
    b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b1\nContent-Transfer-Encoding: base64\n\n"
    b"--b1\n\nx\n--b1--\n",
    multipart(["Content-Type: message/rfc822\n\nFrom: b@example.com\n\ninner\n"]),
    multipart([TEXT], subtype="digest"),
    multipart(["Content-Type: multipart/mixed; boundary=b1\n\n--b1\n\nx\n--b1--\n"]),  # the same boundary inside
    multipart(["Content-Type: text/plain\nbody without the blank line\n"]),
])
def test_anything_unusual_is_left_to_the_feedparser(raw):
    assert split_mime(raw) is None
    parsed = parse_email(raw)  # and parsing still works through the feedparser
    assert parsed.headers is not None


def test_parse_email_gives_the_same_result_either_way(monkeypatch):
    raw = multipart([TEXT, "Content-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
                     "JVBERi0xLjQK\n", HTML], eol="\r\n", preamble="pre\r\n")
    fast = parse_email(raw)
    monkeypatch.setattr("portal.mail.parse.split_mime", lambda raw: None)
    slow = parse_email(raw)
    assert (fast.text, fast.html, [a.as_dict() for a in fast.attachments], fast.defects) == (
        slow.text, slow.html, [a.as_dict() for a in slow.attachments], slow.defects)
    assert fast.text.startswith("Hello") and fast.attachments[0].filename == "a.pdf"


CORPORA = corpora_root()


@pytest.mark.skipif(not CORPORA.is_dir(), reason=f"email corpora not found at {CORPORA}; fast MIME split not compared")
def test_every_corpus_message_the_fast_path_takes_matches_the_feedparser():
    taken = declined = 0
    for path in sorted(CORPORA.rglob("*")):
        if not path.is_file() or path.suffix in (".md", ".json", ".yaml", ".yml", ".py", ".txt", ".csv"):
            continue
        raw, _ = _repair_header_block(path.read_bytes())
        try:
            if check(raw):
                taken += 1
            else:
                declined += 1
        except AssertionError as exc:
            raise AssertionError(f"{path}: {exc}") from exc
    # Most real mail is well formed: a fast path that declined everything would prove nothing.
    assert taken > 150 and taken > declined, (taken, declined)


_LINE = st.text(alphabet=st.sampled_from(list("ab -\t:=x\udce9")), max_size=12)
_LINES = st.lists(st.one_of(_LINE, st.sampled_from(["--b1", "--b1--", "--b1 ", "--in", "--in--", "", " "])),
                  max_size=6)


@st.composite
def mime_trees(draw, depth=0):
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    kind = draw(st.sampled_from(["leaf", "leaf", "multi"] if depth < 2 else ["leaf"]))
    if kind == "leaf":
        head = draw(st.sampled_from(["Content-Type: text/plain", "Content-Type: text/html; charset=x",
                                     "X-A: 1\n folded", ""]))
        return (head + "\n" if head else "") + "\n" + "\n".join(draw(_LINES)), eol
    boundary = "b1" if depth == 0 else "in"
    parts = [draw(mime_trees(depth=depth + 1))[0] for _ in range(draw(st.integers(0, 3)))]
    text = f"Content-Type: multipart/mixed; boundary={boundary}\n\n" + "\n".join(draw(_LINES))
    for part in parts:
        text += f"\n--{boundary}\n{part}"
    if draw(st.booleans()):
        text += f"\n--{boundary}--" + draw(st.sampled_from(["", " ", "\n", "\nepi\n", "--"]))
    return text + "\n".join(draw(_LINES)), eol


@fuzz(400)
@given(mime_trees())
def test_random_mime_trees_are_split_as_the_feedparser_does_or_declined(tree):
    text, eol = tree
    raw = ("From: a@example.com\n" + text).replace("\n", eol).encode("utf-8", "surrogateescape")
    check(raw)


def test_a_large_part_is_held_once_while_the_tree_is_read():
    """The tree is read by positions in the decoded text: a big attachment is copied once, into
    its payload (slicing parts and bodies on the way down made four more copies at once)."""
    import base64
    import tracemalloc

    attachment = base64.encodebytes(bytes(range(256)) * (8 * 4096)).replace(b"\n", b"\r\n")  # 8 MB, 11 encoded
    raw = (b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
           b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + attachment + b"--b1--\r\n")
    tracemalloc.start()
    try:
        tree = split_mime(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tree is not None and tree.get_payload(1).get_payload() == attachment.decode().removesuffix("\r\n")
    assert peak < 2.3 * len(raw), (peak, len(raw))  # the decoded text, the payload, and little else
