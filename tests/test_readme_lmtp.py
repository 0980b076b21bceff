"""The README's LMTP section: its command lines are what `python -m workers.lmtp` accepts, its
Postfix lines are what the mailbox page shows, and its settings are the app's."""

import re
import shlex
from pathlib import Path

from config import Config
from portal.transport.lmtp import parse_listen
from workers.lmtp import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"### {title}\n")
    return README[start:README.index("\n## ", start)]


def test_the_documented_command_lines_parse():
    lmtp = section("LMTP delivery")
    commands = re.findall(r"^python -m workers\.lmtp (.+)$", lmtp, re.M)
    commands += re.findall(r"`python -m workers\.lmtp (--listen [^`]+)`", README)
    assert len(commands) >= 3
    for command in commands:
        args = build_parser().parse_args(shlex.split(command))
        parse_listen(args.listen)  # raises on anything the listener would refuse


def test_the_postfix_lines_name_the_documented_listeners(app, world):
    lmtp = section("LMTP delivery")
    assert "transport_maps = hash:/etc/postfix/transport" in lmtp
    hops = re.findall(r"^\S+@\S+\s+(lmtp:\S+)$", lmtp, re.M)
    listens = re.findall(r"^python -m workers\.lmtp --listen (\S+)$", lmtp, re.M)
    # The page writes `lmtp:inet:HOST:PORT` or `lmtp:unix:/path` from TIDEMARK_LMTP_LISTEN.
    assert hops == ["lmtp:" + (x if x.startswith("unix:") else "inet:" + x) for x in listens]
    page = app.jinja_env.get_template("mailboxes/_lmtp.html")
    for listen, hop in zip(listens, hops):
        app.config["TIDEMARK_LMTP_LISTEN"] = listen
        with app.test_request_context():
            html = page.render(mailbox=None, form=type("F", (), {"address": type("A", (), {"data": "a@b.example"})})())
        assert f"a@b.example  {hop}" in html


def test_the_documented_settings_exist():
    for name in ("TIDEMARK_LMTP_LISTEN", "TIDEMARK_METRICS_TOKEN"):
        assert f"| `{name}` |" in README and hasattr(Config, name)
    assert "`GET /metrics`" in section("Time to ticket") and "tidemark_time_to_ticket_seconds" in README
