"""What `make run` starts: the demo is seeded, the portal answers, a worker is live, and one
Ctrl-C stops every process it started."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from redis import Redis
from rq import Worker

from tests.conftest import free_port
from workers.cron import SCHEDULE
from workers.stack import parse_args, web_command

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
        # The IMAP IDLE watcher, once the portal is ready.
        from tests.workers.test_fetch_faults import children_of, wait_for

        wait_for(lambda: any(b"workers.watcher" in Path(f"/proc/{pid}/cmdline").read_bytes()
                             for pid in children_of(stack.pid)), timeout=30)
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

    def command_of(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:  # it ended since it was listed (a short-lived child)
            return b""

    def worker_pids() -> list[int]:
        return [pid for pid in children_of(stack.pid) if b"workers.worker" in command_of(pid)]

    try:
        wait_for(lambda: len(worker_pids()) == 1, timeout=60)
        first = worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        # Reaped (a zombie is still a child, with an empty command line) and another started.
        wait_for(lambda: first not in children_of(stack.pid) and any(p != first for p in worker_pids()), timeout=30)
        assert stack.poll() is None
    finally:
        stack.send_signal(signal.SIGINT)
        output = stack.communicate(timeout=60)[0]
    assert stack.returncode == 0, output
    assert "worker stopped (exit -9); starting it again in 1 s." in output and "Stopped." in output


def _read_lines(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def read():
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def test_ctrl_c_in_the_terminal_stops_everything_quietly_and_the_sign_in_comes_last(tmp_path):
    """Ctrl-C reaches the whole foreground process group, as a terminal sends it: each child is in
    its own group, so the stack stops them in reverse order (Redis last), and nobody prints a
    traceback. The sign-in is printed once the portal is ready, below the start-up noise, and the
    cron's routine jobs (every 10 s) are not logged."""
    env = _env(tmp_path / "instance")
    flask = [sys.executable, "-m", "flask"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "demo", "seed"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    stack = subprocess.Popen([sys.executable, "-m", "workers.stack", "--bind", f"127.0.0.1:{port}",
                              "--web-workers", "1", "--demo"], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = _read_lines(stack, lines)
    sign_in = "Sign in as admin@demo.example with the password tidemark-demo\n"
    try:
        deadline = time.monotonic() + 60
        while sign_in not in lines and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sign_in in lines, "".join(lines)
        # The cron enqueues its four routine jobs as it starts: wait until the worker has run
        # them all, so that their (absent) log lines would have been written.
        redis = Redis(unix_socket_path=str(tmp_path / "instance" / "redis.sock"))
        deadline = time.monotonic() + 30
        while sum(w.successful_job_count for w in Worker.all(connection=redis)) < len(SCHEDULE):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        assert any("CronScheduler tidemark-cron: starting" in line for line in lines), "".join(lines)
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        stack.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert stack.returncode == 0, output
    ready = lines.index(f"Tidemark is ready: open http://127.0.0.1:{port} (Ctrl-C stops everything)\n")
    assert lines.index(sign_in) == ready + 1
    assert all("Booting worker" not in line and "Listening on" not in line for line in lines[ready:]), output
    assert "Traceback" not in output and "Error" not in output, output
    assert "Enqueued job" not in output and "Job OK" not in output and "routine:" not in output, output
    assert output.rstrip().endswith("Stopped.") and lines.index("Stopping…\n") > ready, output
    assert not _port_open(port)


def test_the_portal_runs_under_gunicorn_gthread_with_the_threads_asked_for(monkeypatch):
    monkeypatch.setenv("TIDEMARK_WEB_THREADS", "16")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    command = web_command(parse_args(["--bind", "127.0.0.1:8123"]))
    assert command[1:3] == ["-m", "gunicorn"] and command[-1] == "wsgi:app"
    flags = dict(zip(command[3:-1:2], command[4:-1:2], strict=True))
    assert flags == {"--bind": "127.0.0.1:8123", "--workers": "3", "--worker-class": "gthread", "--threads": "16",
                     "--access-logfile": "-"}
    assert web_command(parse_args(["--web-threads", "4"]))[command.index("--threads") + 1] == "4"
