"""What `make run` starts: the demo is seeded, the portal answers, a worker is live, and one
Ctrl-C stops every process it started."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _env(instance: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "REDIS_URL", "DATABASE_URL"))}
    env.update(TIDEMARK_INSTANCE_DIR=str(instance), FLASK_APP="wsgi", TIDEMARK_ENV="development")
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_stack_starts_serves_and_stops_on_ctrl_c(tmp_path):
    env = _env(tmp_path / "instance")
    flask = [sys.executable, "-m", "flask"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    seeded = subprocess.run([*flask, "demo", "seed"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert "admin@demo.example" in seeded.stdout

    port = free_port()
    stack = subprocess.Popen([sys.executable, "-m", "workers.stack", "--bind", f"127.0.0.1:{port}",
                              "--web-workers", "1"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    state = json.load(resp)
                if state["workers"] >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert state is not None and state["status"] == "ok" and state["workers"] == 1, state
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sign-in", timeout=5) as resp:
            assert "Sign in to Tidemark" in resp.read().decode()
        assert (tmp_path / "instance" / "redis.sock").exists()  # the private Redis
    finally:
        stack.send_signal(signal.SIGINT)
        output = stack.communicate(timeout=60)[0]
    assert stack.returncode == 0, output
    assert "Stopped." in output
    assert not _port_open(port)


def test_make_run_starts_a_killed_worker_again(tmp_path):
    from tests.workers.test_fetch_faults import children_of, wait_for

    env = _env(tmp_path / "instance")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    stack = subprocess.Popen([sys.executable, "-m", "workers.stack", "--bind", f"127.0.0.1:{port}",
                              "--web-workers", "1"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def worker_pids() -> list[int]:
        return [pid for pid in children_of(stack.pid)
                if b"workers.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    try:
        wait_for(lambda: len(worker_pids()) == 1, timeout=60)
        first = worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: worker_pids() and worker_pids() != [first], timeout=30)
        assert stack.poll() is None
    finally:
        stack.send_signal(signal.SIGINT)
        output = stack.communicate(timeout=60)[0]
    assert stack.returncode == 0, output
    assert "worker stopped (exit -9); starting it again in 1 s." in output and "Stopped." in output
