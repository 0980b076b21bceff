"""Parse throughput: explain-level parsing next to the bare standard-library baseline.

    .venv/bin/python -m tests.bench.bench_parse [--n 10000] [--runs 2]

Messages come from ../shared/bench/gen_mail.py when present (deterministic), else from a small
generator here. Not a pytest test.
"""
from __future__ import annotations

import argparse
import email
import importlib.util
import random
import resource
import sys
import time
import tracemalloc
from email import policy
from email.message import EmailMessage
from pathlib import Path

from portal.mail.explain import explain_message
from portal.mail.parse import parse_email
from portal.mail.refs import RefFormat

SHARED_GEN = Path(__file__).resolve().parents[2].parent / "shared" / "bench" / "gen_mail.py"


def _own_corpus(n: int, seed: int = 42) -> list[bytes]:
    rng = random.Random(seed)
    words = "printer invoice password reset vpn server error please help urgent backup license".split()
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = f"User {i} <user{i}@customer.example>"
        msg["To"] = "support@msp.example"
        msg["Subject"] = ("Re: " if i % 4 == 0 else "") + " ".join(rng.choices(words, k=5))
        msg["Message-ID"] = f"<{i}@customer.example>"
        msg["Date"] = "Tue, 02 Jan 2024 10:11:12 +0100"
        text = "\n".join(" ".join(rng.choices(words, k=12)) for _ in range(rng.randint(3, 30)))
        msg.set_content(text)
        if i % 5 == 0:
            msg.add_alternative(f"<p>{text}</p>", subtype="html")
        if i % 12 == 0:
            msg.add_attachment(rng.randbytes(50_000), maintype="application", subtype="pdf", filename=f"r{i}.pdf")
        out.append(msg.as_bytes())
    return out


def corpus(n: int) -> tuple[list[bytes], str]:
    if SHARED_GEN.exists():
        spec = importlib.util.spec_from_file_location("gen_mail", SHARED_GEN)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return [raw for raw, _meta in module.generate(n, seed=42)], str(SHARED_GEN)
    return _own_corpus(n), "built-in generator"


def baseline(raw: bytes):
    """What the standard library does for the same job with no helpdesk extras."""
    m = email.message_from_bytes(raw, policy=policy.default)
    hdr = (str(m["subject"]), m["from"].addresses if m["from"] else None, str(m["to"]),
           m["message-id"], m["in-reply-to"], m["references"], m["date"].datetime if m["date"] else None)
    body = m.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    size = sum(len(part.get_content()) for part in m.iter_attachments())
    return hdr, len(text), size


def run(label: str, fn, raws: list[bytes], runs: int) -> float:
    best = 0.0
    for r in range(runs):
        started = time.perf_counter()
        for raw in raws:
            fn(raw)
        rate = len(raws) / (time.perf_counter() - started)
        best = max(best, rate)
        print(f"  {label} run {r + 1}: {rate:,.0f} msg/s")
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    raws, source = corpus(args.n)
    megabytes = sum(map(len, raws)) / 1e6
    print(f"{len(raws)} messages, {megabytes:.1f} MB from {source} ({time.perf_counter() - started:.1f}s)")

    fmt, secret = RefFormat(), b"bench-secret"

    def explain(raw: bytes):
        return explain_message(raw, file="bench", waterlines=[], ref_format=fmt, secret=secret)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stdlib = run("stdlib baseline", baseline, raws, args.runs)
    parse_only = run("parse_email", parse_email, raws, args.runs)
    explained = run("explain_message", explain, raws, args.runs)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # Peak Python allocation for one message at a time (streaming: must not grow with n).
    tracemalloc.start()
    for raw in raws[:500]:
        explain(raw)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print()
    print(f"stdlib baseline : {stdlib:8,.0f} msg/s")
    print(f"parse_email     : {parse_only:8,.0f} msg/s  ratio {parse_only / stdlib:.2f}x")
    print(f"explain_message : {explained:8,.0f} msg/s  ratio {explained / stdlib:.2f}x  (target >= 0.80x)")
    print(f"peak RSS {rss_after / 1024:.0f} MB (grew {max(rss_after - rss_before, 0) / 1024:.0f} MB while "
          f"parsing; corpus held in memory {megabytes:.0f} MB); peak traced allocation while explaining "
          f"one message at a time: {peak / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
