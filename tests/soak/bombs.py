"""Each mail bomb fetched from a real Dovecot by the real fetch, in a process of its own: the time
it takes and the peak memory of that process, beside the same fetch of one ordinary message.

    .venv/bin/python -m tests.soak.bombs [--line-mb 500] [--only NAME,NAME]

Per bomb (tests/mailbombs.py, plus a base64 line of --line-mb MB without breaks, once at the
installation's 40 MB limit and once in a mailbox set to the largest limit it may have, with a
line just under that): a Dovecot mailbox holding the bomb and then an ordinary message, a fresh
SQLite database, and `run_fetch` in a child process that reports its wall time and peak RSS.
The table says what became of the bomb (its outcome and the flag in its trace) and whether the
ordinary message after it became a ticket in the same run. Exits 1 when one was not kept, or
the ordinary one not processed. A benchmark, not a test (tests/workers/test_mail_bombs_fetch.py
holds the behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from portal.models.mailboxes import MAX_MESSAGE_SIZE_LIMIT
from tests.bench.bench_portal import say
from tests.bench.scratch import ScratchDatabase, migrate_quietly
from tests.dovecot import DovecotServer
from tests.mailbombs import bombs, forty_megabytes, one_line
from tests.mailfactory import email

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20
LABELS = {"attachments": "5,000 attachments", "nested": "1,000 nested message/rfc822",
          "subject": "a 1 MB subject", "recipients": "10,000 recipients", "deep": "HTML nested 100,000 deep",
          "attributes": "a tag with 100,000 attributes", "big": "41 MB, over the 40 MB limit"}


def child(url: str, keys: str, mailbox_id: int) -> None:
    """Runs in the measured process: one fetch, then what it did as JSON on stdout."""
    from sqlalchemy import select

    from portal.app import create_app
    from portal.extensions import db
    from portal.inbound.fetch import run_fetch
    from portal.models import Mailbox, Message, RawMessage, Ticket
    from portal.services import commit
    from portal.transport import open_session

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TIDEMARK_ENCRYPTION_KEY=keys)
    with app.app_context():
        began = time.perf_counter()
        report = run_fetch(db.session.get(Mailbox, mailbox_id), open_session=open_session, keys=keys, secret=b"s",
                           commit=commit)
        wall = time.perf_counter() - began
        first = db.session.scalar(select(RawMessage).order_by(RawMessage.id).limit(1))
        shown = db.session.scalar(select(Message).where(Message.raw_message_id == first.id)) if first else None
        after = db.session.scalar(select(Ticket).where(Ticket.subject == "After the bomb"))
        print(json.dumps({
            "wall": wall, "rss_mb": peak_rss_mb(),
            "fetched": report.fetched, "decided": report.decided, "failed": report.failed, "error": report.error,
            "kept": first is not None, "outcome": shown.outcome if shown else None,
            "flag": _flag(shown.trace if shown else []), "after": after is not None,
        }))


def peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage: across exec it keeps the forking parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _flag(trace: list[str]) -> str:
    for line in trace:
        if line.startswith(("parse: ", "kept without processing")):
            return line.removeprefix("parse: ")[:70]
    return "-"


def cases(line_mb: int) -> list[tuple[str, bytes, int | None]]:
    """(name, message, the mailbox's largest message or None for the installation's)."""
    found = [("ordinary message (baseline)", email(subject="The bomb"), None)]
    for name, message in bombs().items():
        if name != "line":
            found.append((LABELS.get(name, name), message, None))
    found.append(("39 MB, just under the 40 MB limit", forty_megabytes(38 * MB), None))
    largest = MAX_MESSAGE_SIZE_LIMIT // MB
    found.append((f"base64 line of {line_mb} MB", one_line(line_mb * MB), None))
    found.append((f"base64 line of {largest - 10} MB, limit {largest} MB", one_line((largest - 10) * MB),
                  MAX_MESSAGE_SIZE_LIMIT))
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--line-mb", type=int, default=500, help="the base64 line without breaks, in MB")
    ap.add_argument("--only", default="", help="comma-separated names (a part of each) to run only those")
    ap.add_argument("--child", nargs=2, metavar=("URL", "MAILBOX"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], os.environ["TIDEMARK_ENCRYPTION_KEY"], int(args.child[1]))
        return 0

    from portal.app import create_app
    from portal.extensions import db
    from portal.services import clients, commit
    from portal.services.mailboxes import save_mailbox

    scratch = Path(tempfile.mkdtemp(prefix="tmbombs-"))
    scratch.chmod(0o755)  # Dovecot's processes run as other users
    dovecot = DovecotServer(scratch / "dovecot")
    rows, bad = [], []
    try:
        dovecot.start()
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        for name, message, limit in cases(args.line_mb):
            if wanted and not any(w in name for w in wanted):
                continue
            user = dovecot.new_user("bomb")
            dovecot.deliver(user, message)
            dovecot.deliver(user, email(subject="After the bomb"))
            keys = Fernet.generate_key().decode()
            database = ScratchDatabase("sqlite", scratch, "")
            app = create_app("testing", SQLALCHEMY_DATABASE_URI=database.url, TIDEMARK_ENCRYPTION_KEY=keys)
            with app.app_context():
                migrate_quietly()
                msp = clients.create_msp(clients.ClientInput(name="Bomb MSP"))
                mailbox, _ = save_mailbox(msp, msp, {
                    "address": "support@acme.example", "protocol": "imap", "host": dovecot.host,
                    "port": dovecot.imap_port, "security": "none", "username": user.name,
                    "password": user.password, "status": "active", "max_message_size": limit,
                }, keys=keys, actor=None)
                commit()
                mailbox_id = mailbox.id
                db.session.remove()
                db.engine.dispose()
            # The key through the environment: it may begin with "-", which argparse reads as an option.
            out = subprocess.run([sys.executable, "-m", "tests.soak.bombs", "--child", database.url, str(mailbox_id)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=3600,
                                 env={**os.environ, "TIDEMARK_ENCRYPTION_KEY": keys})
            dovecot.reset(user)
            Path(database.url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            if out.returncode != 0:
                bad.append(f"{name}: the fetch process failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            got = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((name, len(message), got))
            say(f"  {name}: {got['wall']:.1f} s, {got['rss_mb']:.0f} MB")
            if not (got["kept"] and got["after"] and got["failed"] == 0 and got["error"] is None):
                bad.append(f"{name}: kept {got['kept']}, the message after it a ticket {got['after']}, "
                           f"failed {got['failed']}, error {got['error']}")
    finally:
        dovecot.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    say()
    say("Mail bombs: one fetch of the bomb and an ordinary message after it, in a process of its own")
    say(f"{'bomb':<38} {'size MB':>8} {'time s':>7} {'peak MB':>8} {'outcome':<12} {'next':<5} flag")
    for name, size, got in rows:
        say(f"{name:<38} {size / MB:>8.1f} {got['wall']:>7.1f} {got['rss_mb']:>8.0f} {got['outcome'] or '-':<12} "
            f"{'ok' if got['after'] else 'LOST':<5} {got['flag']}")
    say("time and peak: the whole fetch of both messages (the process's peak RSS, Python and the portal included); "
        "next: the ordinary message after the bomb became a ticket in the same run")
    for line in bad:
        say(f"!!! {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
