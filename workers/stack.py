"""Everything `make run` starts, in one process group that Ctrl-C stops as a whole:

- a private Redis on a socket in instance/ when REDIS_URL is not set,
- the portal under gunicorn,
- one RQ worker (with RQ's scheduler for delayed and retried jobs),
- the cron scheduler (exactly one per installation).

    python -m workers.stack [--bind 127.0.0.1:5000] [--web-workers 2]

If any of them dies, the others are stopped too, so a half-running stack never lingers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import INSTANCE_DIR

PYTHON = sys.executable


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
    args = parser.parse_args(argv)

    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen]] = []
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_private_redis(INSTANCE_DIR)
        children.append(("redis", redis_proc))
        print(f"Started a private Redis at {env['REDIS_URL']}", flush=True)

    def spawn(name: str, cmd: list[str]) -> None:
        children.append((name, subprocess.Popen(cmd, env=env)))

    spawn("web", [PYTHON, "-m", "gunicorn", "--bind", args.bind, "--workers", str(args.web_workers),
                  "--access-logfile", "-", "wsgi:app"])
    spawn("worker", [PYTHON, "-m", "workers.worker"])
    spawn("cron", [PYTHON, "-m", "workers.cron"])
    print(f"Tidemark is starting on http://{args.bind} (Ctrl-C stops everything)", flush=True)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in children:
            if proc.poll() is not None:
                print(f"{name} stopped (exit {proc.returncode}); stopping the rest.", flush=True)
                exit_code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.2)

    # Stop the consumers before Redis, so they do not log connection errors on the way out.
    for name, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print("Stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
