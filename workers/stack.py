"""Everything `make run` starts, in one process group that Ctrl-C stops as a whole:

- a private Redis on a socket in instance/ when REDIS_URL is not set,
- the portal under gunicorn,
- one RQ worker (with RQ's scheduler for delayed and retried jobs),
- the cron scheduler (exactly one per installation).

    python -m workers.stack [--bind 127.0.0.1:5000] [--web-workers 2]

If one of them dies, it is started again: after a second, and after ever longer pauses (up to
half a minute) while it keeps dying. Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from config import INSTANCE_DIR

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
    )
    for _ in range(100):
        if sock.exists():
            break
        if proc.poll() is not None:
            raise SystemExit("redis-server stopped at start-up; see its messages above.")
        time.sleep(0.05)
    return proc, f"unix://{sock}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default=os.environ.get("TIDEMARK_BIND", "127.0.0.1:5000"))
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--web-threads", type=int, default=int(os.environ.get("TIDEMARK_WEB_THREADS", "16")))
    args = parser.parse_args(argv)

    env = dict(os.environ)
    # name → how to start it, in the order they start (and stop the other way round).
    starters: dict[str, Callable[[], subprocess.Popen]] = {}
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_private_redis(INSTANCE_DIR)
        starters["redis"] = lambda: start_private_redis(INSTANCE_DIR)[0]
        print(f"Started a private Redis at {env['REDIS_URL']}", flush=True)

    def command(cmd: list[str]) -> Callable[[], subprocess.Popen]:
        return lambda: subprocess.Popen(cmd, env=env)

    # Threads (gthread): an open ticket page's live stream holds a thread, not a whole worker.
    starters["web"] = command([PYTHON, "-m", "gunicorn", "--bind", args.bind, "--workers", str(args.web_workers),
                               "--worker-class", "gthread", "--threads", str(args.web_threads),
                               "--access-logfile", "-", "wsgi:app"])
    starters["worker"] = command([PYTHON, "-m", "workers.worker"])
    starters["cron"] = command([PYTHON, "-m", "workers.cron"])
    now = time.monotonic()
    children: dict[str, subprocess.Popen | None] = {
        name: redis_proc if name == "redis" else start() for name, start in starters.items()}
    started = dict.fromkeys(starters, now)
    pauses = dict.fromkeys(starters, 0.0)
    due: dict[str, float] = {}  # name → when a stopped child starts again
    print(f"Tidemark is starting on http://{args.bind} (Ctrl-C stops everything)", flush=True)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
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
        time.sleep(0.2)

    # Stop the consumers before Redis, so they do not log connection errors on the way out.
    for name, proc in reversed(children.items()):
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print("Stopped.", flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
