"""Everything `make run` starts, stopped as a whole by Ctrl-C:

- a private Redis on a socket in instance/ when REDIS_URL is not set,
- the portal under gunicorn,
- one RQ worker (with RQ's scheduler for delayed and retried jobs),
- the cron scheduler (exactly one per installation),
- the IMAP IDLE watcher (workers.watcher: new mail in an IMAP mailbox is fetched at once), once
  the portal is ready.

    python -m workers.stack [--bind 127.0.0.1:5000] [--web-workers 2] [--demo]

If one of them dies, it is started again: after a second, and after ever longer pauses (up to
half a minute) while it keeps dying. When the portal answers and a worker is live, the address
(and, with --demo, the demo's sign-in) is printed again, below the start-up messages. Ctrl-C (or
SIGTERM) stops them all, the other way round from how they started: each child has its own
process group, so the terminal's Ctrl-C reaches only this process, which stops the cron and the
worker before the Redis they talk to.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from config import INSTANCE_DIR, portal_url_for_bind

PYTHON = sys.executable
# A child that ran this many seconds before it stopped is started again after the shortest pause.
RESTART_RESET = 60.0
RESTART_MAX = 30.0


def start_private_redis(instance: Path) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(
            "No REDIS_URL is set and redis-server is not installed. "
            "Install it (apt-get install redis-server) or set REDIS_URL."
        )
    instance.mkdir(parents=True, exist_ok=True)
    sock = instance / "redis.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(instance), "--loglevel", "warning"],
        process_group=0,  # stopped by this process, after the ones that use it
    )
    for _ in range(100):
        if sock.exists():
            break
        if proc.poll() is not None:
            raise SystemExit("redis-server stopped at start-up; see its messages above.")
        time.sleep(0.05)
    return proc, f"unix://{sock}"


def is_ready(url: str) -> bool:
    """The portal answers and counts a live worker."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=1) as resp:
            return json.load(resp).get("workers", 0) >= 1
    except (OSError, ValueError):
        return False


def announce(url: str, demo: bool) -> None:
    lines = [f"Tidemark is ready: open {url} (Ctrl-C stops everything)"]
    if demo:
        from portal.services.demo import DEMO_ADMIN, DEMO_PASSWORD  # noqa: PLC0415 - loads the whole portal
        lines.append(f"Sign in as {DEMO_ADMIN} with the password {DEMO_PASSWORD}")
    rule = "=" * max(len(line) for line in lines)
    print("\n".join([rule, *lines, rule]), flush=True)


def stop_all(children: dict[str, subprocess.Popen | None]) -> None:
    """The last started first: the watcher, the cron and the worker before Redis, so none of them meets a
    vanished Redis on its way out."""
    for proc in reversed(children.values()):
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default=os.environ.get("TIDEMARK_BIND", "127.0.0.1:5000"))
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--web-threads", type=int, default=int(os.environ.get("TIDEMARK_WEB_THREADS", "16")))
    parser.add_argument("--demo", action="store_true", help="print the demo's sign-in when ready")
    return parser.parse_args(argv)


def web_command(args: argparse.Namespace) -> list[str]:
    """The portal under gunicorn. Threads (gthread): an open ticket page's live stream holds a
    thread, not a whole worker (and at most half of them: portal.live)."""
    return [PYTHON, "-m", "gunicorn", "--bind", args.bind, "--workers", str(args.web_workers),
            "--worker-class", "gthread", "--threads", str(args.web_threads), "--access-logfile", "-", "wsgi:app"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    # At once: a Ctrl-C while children start must stop them too (they do not see the terminal's).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    env = dict(os.environ, TIDEMARK_BIND=args.bind)  # links in email follow it (config.py)
    # name → how to start it, in the order they start (and stop the other way round).
    starters: dict[str, Callable[[], subprocess.Popen]] = {}
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_private_redis(INSTANCE_DIR)
        starters["redis"] = lambda: start_private_redis(INSTANCE_DIR)[0]
        print(f"Started a private Redis at {env['REDIS_URL']}", flush=True)

    def command(cmd: list[str]) -> Callable[[], subprocess.Popen]:
        return lambda: subprocess.Popen(cmd, env=env, process_group=0)

    starters["web"] = command(web_command(args))
    starters["worker"] = command([PYTHON, "-m", "workers.worker"])
    starters["cron"] = command([PYTHON, "-m", "workers.cron"])
    starters["watcher"] = command([PYTHON, "-m", "workers.watcher"])
    now = time.monotonic()
    # The watcher only makes new mail come sooner: it starts once the portal is ready (or after
    # a minute), not in the crowd that competes for the processor at start-up.
    later = {"watcher"}
    children: dict[str, subprocess.Popen | None] = {
        name: redis_proc if name == "redis" else None if name in later else start()
        for name, start in starters.items()}
    started = dict.fromkeys(starters, now)
    pauses = dict.fromkeys(starters, 0.0)
    due: dict[str, float] = dict.fromkeys(later, now + RESTART_RESET)  # name → when a stopped child starts (again)
    url = portal_url_for_bind(args.bind, local=True)
    print(f"Tidemark is starting on {url or args.bind} (Ctrl-C stops everything)", flush=True)
    ready, next_check = url is None, 0.0  # behind a socket: nothing to ask
    if ready:
        due.update(dict.fromkeys(later, now))
    while not stopping:
        now = time.monotonic()
        for name, proc in children.items():
            if proc is not None and proc.poll() is not None:
                # One that ran a while starts again at once; one that keeps dying, ever more slowly.
                pauses[name] = 1.0 if now - started[name] > RESTART_RESET else min(max(pauses[name] * 2, 1.0),
                                                                                     RESTART_MAX)
                print(f"{name} stopped (exit {proc.returncode}); starting it again in {pauses[name]:.0f} s.",
                      flush=True)
                children[name], due[name] = None, now + pauses[name]
            elif proc is None and now >= due[name]:
                try:
                    children[name], started[name] = starters[name](), now
                except (OSError, SystemExit) as exc:
                    print(f"{name} could not be started: {exc}", flush=True)
                    pauses[name] = min(max(pauses[name], 1.0) * 2, RESTART_MAX)
                    due[name] = now + pauses[name]
        if not ready and now >= next_check:
            ready, next_check = is_ready(url), now + 1.0
            if ready:
                announce(url, args.demo)
                due.update({name: now for name in later if children[name] is None})
        time.sleep(0.2)

    print("Stopping…", flush=True)
    stop_all(children)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
