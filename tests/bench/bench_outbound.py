"""Outbound throughput: render (built-in template), compose, and send to a local aiosmtpd sink.

    .venv/bin/python -m tests.bench.bench_outbound [--n 2000] [--event ticket_created]

Sending is measured twice: one SMTP connection per message (what a send job does) and one
connection reused for all (send_many). Not a pytest test.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from portal.mail.compose import AUTO_REPLIED, compose
from portal.mail.refs import RefFormat
from portal.mail.render import EVENTS, load_default, render, sample_context
from portal.transport.smtp import send, send_many
from tests.smtp import SmtpServer

SECRET = b"bench-secret"


def _contexts(n: int) -> list[dict]:
    out = []
    for i in range(n):
        context = sample_context()
        context["ticket"]["reference"] = f"T-{1000 + i}"
        context["ticket"]["subject"] = f"Printer {i} prints blank pages"
        context["contact"]["name"] = f"Contact {i} Müller"
        out.append(context)
    return out


def _rate(label: str, count: int, seconds: float) -> None:
    print(f"  {label:<44} {count / seconds:9.0f} msg/s  ({seconds * 1000 / count:6.2f} ms/msg)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--event", default="ticket_created", choices=EVENTS)
    args = parser.parse_args()
    n = args.n
    contexts = _contexts(n)
    template = load_default(args.event)
    ref_format = RefFormat()

    render(template, contexts[0])  # compile once, as a warm worker has
    started = time.perf_counter()
    rendered = [render(template, context) for context in contexts]
    render_s = time.perf_counter() - started

    started = time.perf_counter()
    messages = [compose(r, from_address="support@harbor-it.example", from_name="Harbor IT Support",
                        to=f"Contact {i} <contact{i}@northwind.example>", host="tidemark.harbor-it.example",
                        ticket_ref=f"T-{1000 + i}", ticket_uuid=uuid.uuid4(), ref_format=ref_format, secret=SECRET,
                        plus_mode="mixed", in_reply_to=f"<orig{i}@northwind.example>", automatic=AUTO_REPLIED)
                for i, r in enumerate(rendered)]
    compose_s = time.perf_counter() - started
    size = sum(len(m.as_bytes()) for m in messages[:50]) / min(50, n)

    root = Path(tempfile.mkdtemp(prefix="tmbench-smtp-"))
    server = SmtpServer(root).start()
    server.keep = False  # count, do not keep: memory stays flat
    try:
        settings = server.settings("none")
        started = time.perf_counter()
        for message in messages:
            send(settings, message)
        each_s = time.perf_counter() - started
        sent_each = server.count

        started = time.perf_counter()
        results = send_many(settings, messages)
        reuse_s = time.perf_counter() - started
        failures = [r for r in results if not hasattr(r, "accepted")]
        sent_reuse = server.count - sent_each
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"outbound: {n} messages, event {args.event}, ~{size / 1024:.1f} KiB each (text + HTML)")
    _rate("render (sandboxed Jinja2 + CSS inlining)", n, render_s)
    _rate("compose (MIME, headers, token)", n, compose_s)
    _rate("send, one connection per message", sent_each, each_s)
    _rate("send_many, one reused connection", sent_reuse, reuse_s)
    _rate("render + compose + send (new connection)", n, render_s + compose_s + each_s)
    _rate("render + compose + send_many", n, render_s + compose_s + reuse_s)
    if failures or sent_each != n or sent_reuse != n:
        raise SystemExit(f"not everything arrived: {sent_each}/{n} and {sent_reuse}/{n}, {len(failures)} errors")


if __name__ == "__main__":
    main()
