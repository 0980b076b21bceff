"""Reply/signature cutting (`portal.mail.cut.cut_body`) against the corpora.

talon (plain, raw .eml, HTML and signature cases), github-erp and zapier-erp (visible text,
fragment model, performance traps) and Zammad's signature records. Expectations that are wrong
for a helpdesk are listed in `explained` with the reason instead of bending the code.
"""
from __future__ import annotations

import difflib
import email
import email.policy
import re
import time
from pathlib import Path

from portal.mail.cut import cut_body

from . import CheckResult, load_expected

# Why a corpus expectation does not fit a helpdesk. Keys are corpus file paths.
TALON_EXPLAINED = {
    # plain replies
    "standard_replies/iphone.eml":
        "talon's plain cutter keeps the 'Sent from my iPhone' footer; a helpdesk note does not "
        "need it, so Tidemark cuts mobile footers (the issue asks for it)",
    "standard_replies/sparrow.eml":
        "talon keeps the '--' signature and 'Sent with Sparrow' footer; Tidemark cuts signatures",
    "standard_replies/thunderbird.eml":
        "bottom-posted reply (quote first, answer below): talon removes the quote ABOVE the "
        "answer; Tidemark's cut is a suffix, so a leading quote stays and nothing is lost",
    "inline/text_quotations__test_reply_after_quotations__1.txt":
        "bottom-posted reply: the leading quote is kept above the answer (suffix cut, see "
        "standard_replies/thunderbird.eml)",
    "inline/text_quotations__test_too_many_lines__1.txt":
        "upstream patched MAX_LINES_COUNT=1 so that only the first line survives; with default "
        "settings the second line 'Hi' above '-----Original Message-----' is the sender's text",
    "inline/text_quotations__test_reply_wraps_quotations__1.txt":
        "talon removes a quote in the MIDDLE and keeps the sign-off below it; Tidemark cuts a "
        "suffix only and never drops text written below a quote, so the quote stays visible",
    "inline/text_quotations__test_reply_wraps_nested_quotations__1.txt":
        "as test_reply_wraps_quotations: text below a quote is kept together with the quote",
    "inline/text_quotations__test_quotation_separator_takes_2_lines__1.txt":
        "as test_reply_wraps_quotations: 'Regards, Roman' below the quote keeps the quote",
    # HTML
    "reply-separated-by-hr.html":
        "talon also drops 'Bob', the sender's sign-off in the same <div> as the <hr>; Tidemark "
        "cuts at the <hr> and keeps everything the sender wrote above it",
    "inline/html_quotations__test_gmail_quote_blockquote__1.html":
        "talon keeps a trailing blockquote.gmail_quote that has no attribution line; an HTML "
        "blockquote at the end of a reply is quoted history, so Tidemark cuts it (consistent "
        "with talon's own test_unicode_in_reply)",
    "inline/html_quotations__test_blockquote_disclaimer__1.html":
        "talon drops a blockquote in the middle and keeps the disclaimer below; a suffix cut "
        "keeps both (nothing the sender sent below a quote is lost)",
    # signatures: talon's bruteforce/ML extractors cut sign-offs without a delimiter
    "inline/bruteforce__test_signature_separated_by_dashes__2.txt":
        "'-roman' (lower case) is indistinguishable from a last '-item' line; a helpdesk keeps it",
    "inline/bruteforce__test_signature_separated_by_dashes__3.txt":
        "'- roman' looks like a bullet item; a helpdesk keeps it rather than lose list content",
    "inline/bruteforce__test_signature_words__1.txt":
        "'Thanks!\\nRoman' without a delimiter is part of the message; a helpdesk keeps sign-offs",
    "inline/bruteforce__test_signature_cant_start_from_first_line__1.txt":
        "'regards\\n\\nJohn Doe' without a delimiter is kept: cutting on a greeting word risks "
        "cutting real content",
    "inline/bruteforce__test_signature_max_lines_ignores_empty_lines__1.txt":
        "upstream patched SIGNATURE_MAX_LINES=2 and cuts at a bare 'regards'; kept (see above)",
    "signature/emails/stripped/jeff_body":
        "ML signature ('Stavros Xxxxxx\\nvia mobile') needs a trained classifier and the sender; "
        "a per-message rule cut keeps undelimited signatures",
    "signature/emails/stripped/johndoeexamplecom_body":
        "ML signature without delimiter (name/title/address lines): kept by design",
    "signature/emails/stripped/long_body": "ML signature without delimiter: kept by design",
    "signature/emails/stripped/short_url_body":
        "'Thank you,\\nNoam' is a sign-off, not a signature block; kept by design",
    "signature/emails/stripped/sparse_body":
        "ML signature under a 16-dash rule followed by 20+ sparse lines: a bare dash rule is "
        "too common in content to cut on; kept by design",
    "inline/extraction__test_capitalized__1.txt":
        "ML signature ('John Smith\\nDoe Inc\\n555-…') without delimiter: kept by design",
}
ERP_EXPLAINED: dict[str, str] = {}


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _norm(text: str) -> str:
    """CRLF→LF, right-strip every line, strip the whole (the reference parsers do the same)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _nows(text: str) -> str:
    return re.sub(r"\s", "", text)


def _html_text(markup: str | None) -> str:
    if not markup or not markup.strip():
        return ""
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", markup))
    except Exception:
        return ""
    for bad in doc.xpath("//style|//script|//head"):
        bad.getparent().remove(bad)
    return doc.text_content().replace("\xa0", " ")


def _first_part(raw: bytes, ctype: str = "text/plain") -> str | None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == ctype:
            return part.get_content()
    return None


def _first_text_plain(raw: bytes) -> str:
    return _first_part(raw) or ""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


# --------------------------------------------------------------------------------------------

def _talon(corpora: Path) -> list[CheckResult]:
    records = load_expected(corpora, "talon")
    if records is None:
        return []
    root = corpora / "talon"
    plain = CheckResult("talon", "visible_text", explained={})
    html = CheckResult("talon", "html", explained={})
    sig = CheckResult("talon", "signature", explained={})
    plain.explained["reply-quotations-share-block.eml"] = (
        "upstream feeds the WHOLE raw file (headers included) to the plain-text cutter; the "
        "ingest pipeline feeds the decoded text/plain part, so we check that part instead "
        "(non-empty, no 'From' header left) — counted under visible_text_weak")
    weak = CheckResult("talon", "visible_text_weak", explained={})
    consistent = CheckResult("talon", "text_html_same_cut", explained={
        "standard_replies/outlook.eml":
            "the fixture's text/plain part says 'Hello' and its text/html part 'Allo! Follow up "
            "MIME!' — two different replies, so no cut can make them agree"})

    for rec in records:
        f, kind = rec["file"], rec["kind"]
        path = root / f
        target = {"raw_eml_plain_reply": plain, "plain_reply": plain, "html_reply": html}.get(kind, sig)
        if f in TALON_EXPLAINED:
            target.explained[f] = TALON_EXPLAINED[f]
        if kind == "raw_eml_plain_reply":
            raw = path.read_bytes()
            body = _first_text_plain(raw)
            markup = _first_part(raw, "text/html")
            if markup:
                # both alternatives of one reply: the HTML must be cut where the text is
                both = cut_body(body, markup)
                # the fixtures anonymised a name differently in the two parts: allow a word or two
                ratio = difflib.SequenceMatcher(None, _words(_html_text(both.html)), _words(both.text)).ratio()
                same = ratio >= 0.95
                consistent.check(same, f, f"text {both.text[:60]!r} vs html {_html_text(both.html)[:60]!r}")
            got = cut_body(body).text
            if "visible_text" in rec:
                want = _norm(rec["visible_text"])
                plain.check(_norm(got) == want, f, f"got {_norm(got)[:80]!r}, want {want[:80]!r}")
            else:
                ok = bool(got.strip()) and not any(s in got for s in rec.get("visible_text_not_contains", []))
                weak.check(ok, f, f"got {got[:80]!r}")
        elif kind == "plain_reply":
            got = cut_body(_read(path)).text
            want = _norm(rec["visible_text"])
            plain.check(_norm(got) == want, f, f"got {_norm(got)[:80]!r}, want {want[:80]!r}")
        elif kind == "html_reply":
            markup = _read(path)
            out = cut_body("", markup)
            got = _nows(_html_text(out.html))
            if "visible_text_nows" in rec:
                want = rec["visible_text_nows"]
            else:
                want = _nows(_html_text(rec.get("expected_html_nows", rec.get("expected_html", ""))))
            # the text we show must be the same cut as the HTML
            same = _nows(re.sub(r"(?m)^> ", "", out.text)) == got  # quoted lines get a '> ' in text
            html.check(got == want and same, f,
                       f"got {got[:80]!r}, want {want[:80]!r}" + ("" if same else f"; text {out.text[:60]!r}"))
        elif kind in ("signature_bruteforce", "signature_ml"):
            body = _read(path)
            got = cut_body(body).text
            if "text" in rec:
                want = _norm(rec["text"])
            elif rec.get("signature") is not None and _norm(body).endswith(_norm(rec["signature"])):
                want = _norm(_norm(body)[: -len(_norm(rec["signature"]))])
            else:
                want = _norm(body)
            sig.check(_norm(got) == want, f, f"got {_norm(got)[-80:]!r}, want {want[-80:]!r}")
    return [plain, weak, html, sig, consistent]


# --------------------------------------------------------------------------------------------

def _fragment_checks(rec: dict, visible: str, whole: str, raw: str) -> tuple[bool, str]:
    """Turn the fragment model into assertions: visible fragments are shown, hidden ones are in
    the part that was cut away (the cut is a suffix, so that part is what follows the visible text)."""
    hidden = rec.get("fragments_hidden")
    # the cut keeps whole lines from the top; what it removed are the raw lines below them
    raw_lines = raw.replace("\r\n", "\n").split("\n")
    first = next((k for k, line in enumerate(raw_lines) if line.strip()), 0)
    removed = "\n".join(raw_lines[first + len(visible.split("\n")):]) if visible else raw
    for chk in rec.get("fragment_checks", []):
        idx = chk["index"]
        is_hidden = hidden[idx] if hidden else idx > 0
        where = removed if is_hidden else visible
        if "equals" in chk:
            probe = chk["equals"].strip()
            found = _norm(probe) in where
        elif "contains" in chk:
            probe = chk["contains"]
            found = probe in where
        else:
            probe = chk["regex"]
            found = re.search(probe, where, re.M) is not None
        if not found:
            return False, f"{'hidden' if is_hidden else 'visible'} fragment {idx} {probe[:40]!r} not where expected"
    if rec.get("fragments_count") == 1 and visible != whole:
        return False, "single fragment: the whole body must stay"
    if hidden and not any(hidden) and visible != whole:
        return False, "nothing hidden: the whole body must stay"
    return True, ""


def _erp(corpora: Path, name: str) -> list[CheckResult]:
    records = load_expected(corpora, name)
    if records is None:
        return []
    root = corpora / name
    vis = CheckResult(name, "visible_text", explained=dict(ERP_EXPLAINED))
    speed = CheckResult(name, "speed", explained={})
    for rec in records:
        f = rec["file"]
        body = _read(root / f)
        started = time.perf_counter()
        got = _norm(cut_body(body).text)
        elapsed = time.perf_counter() - started
        whole = _norm(body)
        if "max_seconds" in rec:
            speed.check(elapsed < rec["max_seconds"], f, f"{elapsed:.2f}s > {rec['max_seconds']}s")
        reasons = []
        if "visible_text" in rec and got != _norm(rec["visible_text"]):
            reasons.append(f"got {got[:80]!r}, want {_norm(rec['visible_text'])[:80]!r}")
        for s in rec.get("visible_text_not_contains", []):
            if s in got:
                reasons.append(f"{s!r} still visible")
        for s in rec.get("reply_contains", []):
            if s not in got:
                reasons.append(f"{s!r} missing")
        if "fragment_checks" in rec or "fragments_count" in rec:
            ok, why = _fragment_checks(rec, got, whole, body)
            if not ok:
                reasons.append(why)
        if not got.strip() and whole.strip():
            reasons.append("empty visible text")
        vis.check(not reasons, f, "; ".join(reasons))
    return [vis, speed]


# --------------------------------------------------------------------------------------------

def _zammad(corpora: Path) -> list[CheckResult]:
    records = load_expected(corpora, "zammad")
    if records is None:
        return []
    root = corpora / "zammad"
    res = CheckResult("zammad", "signature_kept_above", explained={})
    # Not an exemption (keyed by no file): the reason this field checks what it checks.
    res.explained["(field note)"] = (
        "Zammad learns a sender's signature from several messages and only MARKS it; a "
        "per-message cut keeps an undelimited signature, so the check is that everything above "
        "the signature survives and no quote/signature rule cuts into the message")
    for rec in records:
        if rec["kind"] not in ("signature_learning", "signature_line"):
            continue
        files = rec.get("files") or [rec["file"]]
        signature = rec.get("common_signature") or rec.get("signature")
        for f in files:
            raw = _read(root / f)
            text = cut_body("", raw).text if f.endswith(".html") else cut_body(raw).text
            body_lines = [ln.strip() for ln in _norm(_source_text(raw, f)).split("\n")]
            first_sig = next((ln.strip() for ln in (signature or "").split("\n") if ln.strip()), None)
            if first_sig and first_sig in body_lines:
                above = body_lines[:body_lines.index(first_sig)]
            else:
                above = body_lines[: max(0, rec.get("signature_line", 1) - 1)]
            missing = [ln for ln in above if ln and ln not in text]
            res.check(not missing and bool(text.strip()), f"{rec['kind']}:{f}", f"lost {missing[:2]!r}")
    return [res]


def _source_text(raw: str, name: str) -> str:
    """The text a reader sees before any cut (HTML rendered the way cut_body renders it)."""
    if name.endswith(".html"):
        from portal.mail.cut import _join
        from portal.mail.cut.html import parse_html, render_lines

        doc = parse_html(raw)
        lines = render_lines(doc) if doc is not None else []
        return _join(lines, len(lines))
    return raw


def run_checks(corpora: Path) -> list[CheckResult]:
    results: list[CheckResult] = []
    results += _talon(corpora)
    results += _erp(corpora, "github-erp")
    results += _erp(corpora, "zapier-erp")
    results += _zammad(corpora)
    return results
