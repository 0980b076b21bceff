import json
import subprocess
import sys
from pathlib import Path

from portal.mail.explain import explain_message, iter_explain_paths
from portal.mail.refs import RefFormat

SECRET = b"s3cret"
KEYS = {"file", "message_id", "in_reply_to", "references", "subject", "from", "to", "cc", "date",
        "auto_generated", "auto_reason", "bounce", "bounced_recipients", "out_of_office", "priority", "text",
        "visible_text", "html_safe", "attachments", "fingerprints", "refs", "defects"}


def mail(subject="Hello", extra=b"", body=b"Body\n"):
    return (b"From: Alice <alice@customer.example>\nTo: support+" + extra + b"@msp.example\nSubject: "
            + subject.encode() + b"\nDate: Tue, 02 Jan 2024 10:11:12 +0100\nMessage-ID: <x@y>\n\n" + body)


def test_explain_has_the_documented_keys_and_is_json():
    f = RefFormat()
    tag = f.tag("T-1042", SECRET).encode()
    body = b"About [T-7], not T-8.\n> " + f.token("T-9", SECRET).encode() + b"\n"
    result = explain_message(mail("Re: [T-1042] Printer", tag, body), file="a.eml", waterlines=[],
                             ref_format=f, secret=SECRET)
    assert KEYS <= set(result)
    json.dumps(result)
    assert result["from"] == {"name": "Alice", "address": "alice@customer.example"}
    assert result["date"] == "2024-01-02T10:11:12+01:00"
    assert result["refs"] == {"subject": ["T-1042"], "body": ["T-7"], "plus": ["T-1042"], "token": ["T-9"]}
    assert result["html_safe"] is None and result["priority"] == "normal"
    assert set(result["fingerprints"]) == {"raw", "content", "envelope"}


def test_iter_explain_paths_walks_any_name_sorted_and_streams(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "no-extension").write_bytes(mail("second"))
    (tmp_path / "a.txt").write_bytes(mail("first"))
    (tmp_path / "c.box").write_bytes(b"\x00garbage\xff")
    results = iter_explain_paths([str(tmp_path)], waterlines=[], ref_format=RefFormat(), secret=SECRET)
    assert not isinstance(results, list)
    files = [Path(r["file"]).relative_to(tmp_path).as_posix() for r in results]
    assert files == ["a.txt", "b/no-extension", "c.box"]


def test_iter_explain_paths_oversized_file_keeps_headers_and_raw_hash(tmp_path):
    import hashlib
    path = tmp_path / "big.eml"
    raw = mail("Big", body=b"z" * 50_000)
    path.write_bytes(raw)
    (result,) = iter_explain_paths([str(path)], waterlines=[], ref_format=RefFormat(), secret=SECRET, max_size=10_000)
    assert result["subject"] == "Big" and result["text"] == ""
    assert result["fingerprints"]["raw"] == hashlib.sha256(raw).hexdigest()
    assert any("limit" in d for d in result["defects"])


def test_mail_package_imports_neither_flask_sqlalchemy_nor_rq():
    # A stand-in for the portal package, so that only portal/mail's own imports count.
    code = ("import sys, types\nstub = types.ModuleType('portal'); stub.__path__ = ['portal']\n"
            "sys.modules['portal'] = stub\n"
            "import portal.mail.explain, portal.mail.parse, portal.mail.classify, portal.mail.refs, "
            "portal.mail.fingerprint, portal.mail.sanitize\n"
            "bad = [m for m in ('flask', 'sqlalchemy', 'rq') if m in sys.modules]\nprint(bad)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_visible_text_falls_back_to_full_text_without_the_cut_module(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "portal.mail.cut", None)  # import now raises ImportError
    raw = mail(body=b"New text\n\n> old quoted text\n")
    result = explain_message(raw, file="x", waterlines=["> old"], ref_format=RefFormat(), secret=SECRET)
    assert result["visible_text"] == result["text"] == "New text\n\n> old quoted text\n"


def test_visible_text_is_cut_when_the_cut_module_is_there(monkeypatch):
    import sys
    import types
    fake = types.ModuleType("portal.mail.cut")
    seen = {}

    def cut_body(text, html, *, waterlines=(), marker=None):
        seen.update(waterlines=list(waterlines), marker=marker)
        return types.SimpleNamespace(text=text.split("\n")[0], html=None)

    fake.cut_body = cut_body
    monkeypatch.setitem(sys.modules, "portal.mail.cut", fake)
    result = explain_message(mail(body=b"Top\nrest\n"), file="x", waterlines=["--cut--"], ref_format=RefFormat(),
                             secret=SECRET)
    from portal.mail.refs import REPLY_MARKER
    assert result["visible_text"] == "Top"
    assert seen == {"waterlines": ["--cut--"], "marker": REPLY_MARKER}
