import textwrap

import pytest
import yaml
from sqlalchemy import func, select

from portal.models import Client, Mailbox, User

CONFIG = textwrap.dedent("""
    clients:
      - name: Demo MSP
        code: DEMO
        waterline: "## Please reply above this line ##"
        allow: []
        children:
          - name: Contoso
            allow: [contoso.com, boss@gmail.com]
            waterline: "Best regards"
    users:
      - {email: admin@demo.example, password: "long enough password", role: admin, client: Demo MSP}
    mailboxes:
      - address: support@demo.example
        client: Demo MSP
        protocol: imap
        host: 127.0.0.1
        port: 10143
        security: none
        username: support
        password: "supportpw"
        aliases: [help@demo.example]
        plus_addressing: off
        acknowledge: true
        routes:
          - {name: VIP, recipients: [vip@demo.example], client: Contoso, acknowledge: false}
          - {name: Partner BCC, recipients: ["*"], senders: ["*@partner.example"], client: Contoso}
          - {name: Everything else, fallback: true, client: Demo MSP}
""")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tidemark.yaml"
    path.write_text(CONFIG)
    return path


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_import_creates_everything_and_is_idempotent(app, db, config_file):
    first = run(app, "config", "import", str(config_file))
    assert first.exit_code == 0, first.output
    assert "4 created" in first.output  # the MSP, Contoso, one user, one mailbox
    second = run(app, "config", "import", str(config_file))
    assert "0 created, 0 updated" in second.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 2
    mailbox = db.session.scalar(select(Mailbox))
    assert mailbox.plus_addressing == "off" and mailbox.aliases == ["help@demo.example"]
    assert [r.name for r in mailbox.routes] == ["VIP", "Partner BCC", "Everything else"]
    assert db.session.scalar(select(User)).check_password("long enough password")


def test_import_updates_what_changed(app, db, config_file):
    run(app, "config", "import", str(config_file))
    config_file.write_text(CONFIG.replace('waterline: "Best regards"', 'waterline: "Kind regards"'))
    result = run(app, "config", "import", str(config_file))
    assert "1 updated" in result.output
    assert db.session.scalar(select(Client).where(Client.name == "Contoso")).waterline == "Kind regards"


def test_export_round_trips_and_hides_secrets_unless_asked(app, db, config_file, tmp_path):
    run(app, "config", "import", str(config_file))
    plain = run(app, "config", "export").output
    assert "supportpw" not in plain and "long enough" not in plain
    with_secrets = run(app, "config", "export", "--with-secrets").output
    assert "supportpw" in with_secrets
    again = tmp_path / "again.yaml"
    again.write_text(with_secrets)
    result = run(app, "config", "import", str(again))
    assert result.exit_code == 0, result.output
    assert "0 created, 0 updated" in result.output


@pytest.mark.parametrize("broken, message", [
    ("clients: [", "not valid YAML"),
    ("mailboxes:\n  - {address: x@y.example, client: Nobody}", "No single client is called 'Nobody'"),
    ("clients:\n  - {name: M, allow: [not valid!]}", "clients[0].allow"),
    ("frobnicate: 1", "Unknown top-level keys"),
])
def test_import_errors_say_where_and_change_nothing(app, db, tmp_path, broken, message):
    path = tmp_path / "bad.yaml"
    path.write_text(broken)
    result = run(app, "config", "import", str(path))
    assert result.exit_code == 1 and message in result.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_smtp_gateway_and_a_mailbox_outgoing_server_round_trip(app, db, config_file, tmp_path):
    from portal.models import SmtpServer

    assert "    acknowledge: true\n" in CONFIG
    config_file.write_text(CONFIG.replace("    acknowledge: true\n", "    acknowledge: true\n"
                                          "    outgoing: {host: smtp.demo.example, port: 465, security: ssl,"
                                          " username: support, password: outpw}\n")
                           + "smtp: {host: relay.example.net, port: 587, security: starttls, username: relay,"
                             " password: relaypw, from: noreply@demo.example}\n")
    assert run(app, "config", "import", str(config_file)).exit_code == 0
    servers = {s.host: s for s in db.session.scalars(select(SmtpServer))}
    assert servers["relay.example.net"].mailbox_id is None and servers["smtp.demo.example"].mailbox_id is not None
    assert b"relaypw" not in servers["relay.example.net"].password_encrypted
    again = run(app, "config", "import", str(config_file))
    assert "0 created, 0 updated" in again.output
    exported = run(app, "config", "export", "--with-secrets").output
    assert "relaypw" in exported and "outpw" in exported and "relay.example.net" in exported
    assert "relaypw" not in run(app, "config", "export").output


# Five levels of ten aliases: a few hundred bytes that name a hundred thousand clients.
BOMB = """clients:
- name: Demo MSP
  children:
  - &a {name: A}
  - &b {name: B, children: [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]}
  - &c {name: C, children: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]}
  - &d {name: D, children: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]}
  - &e {name: E, children: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}
  - {name: F, children: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]}
"""


@pytest.mark.timeout(60)
def test_aliases_are_refused_at_once_in_plain_words(app, db, tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB.encode()) < 500
    started = time.monotonic()
    result = run(app, "config", "import", str(path))
    assert time.monotonic() - started < 1
    assert result.exit_code == 1 and "anchors and aliases" in result.output, result.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0


def test_too_big_a_file_and_too_many_entries_are_refused(app, db, tmp_path):
    from portal.services.config_io import ConfigError, load

    app.config["TIDEMARK_CONFIG_MAX_BYTES"] = 1000
    with pytest.raises(ConfigError) as big:
        load("clients:\n" + "  - {name: X}\n" * 100)
    assert "larger than 1 KB" in str(big.value.errors)
    path = tmp_path / "big.yaml"
    path.write_text("clients:\n" + "  - {name: X}\n" * 100)
    result = run(app, "config", "import", str(path))
    assert result.exit_code == 1 and "larger than 1 KB" in result.output, result.output
    app.config["TIDEMARK_CONFIG_MAX_BYTES"] = 1_000_000
    app.config["TIDEMARK_CONFIG_MAX_ENTRIES"] = 50
    with pytest.raises(ConfigError) as many:
        load("clients:\n- name: M\n  children:\n" + "".join(f"  - {{name: C{i}}}\n" for i in range(60)))
    assert "more than 50 entries" in str(many.value.errors)
    path = tmp_path / "deep.yaml"
    path.write_text("clients: " + "[" * 5000 + "]" * 5000)
    result = run(app, "config", "import", str(path))
    assert result.exit_code == 1 and "nested too deeply" in result.output, result.output


def test_the_readme_example_imports_and_a_second_run_changes_nothing(app, db, tmp_path):
    from pathlib import Path

    from portal.outbound.settings import get_setting
    from portal.services.users import invitation_pending

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### The configuration file\n\n```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme.yaml"
    path.write_text(example.replace('"…"', '"long enough password"'))
    first = run(app, "config", "import", str(path))
    assert first.exit_code == 0, first.output
    assert "0 created, 0 updated" in run(app, "config", "import", str(path)).output
    users = {u.email: u for u in db.session.scalars(select(User))}
    assert users["admin@demo.example"].check_password("long enough password")
    assert invitation_pending(users["tom@demo.example"]) and users["eve@demo.example"].disabled
    assert get_setting("customer_notifications") == ["closed", "reopened"]
    exported = yaml.safe_load(run(app, "config", "export").output)
    assert exported["email_templates"][0]["text_source"] == (
        "Closed: {{ ticket.subject }}\nYour ticket {{ ticket.reference }} is closed.")
    assert exported["canned_responses"][0]["name"] == "Thanks"
    assert exported["email_layouts"] == [{"msp": "Demo MSP", "css": "p { margin: 0 0 1em; }",
                                          "header": "<p>{{ msp.name }}</p>", "footer": "<p>Demo MSP</p>"}]
    msp_entry = exported["clients"][0]
    assert msp_entry["sla_policies"][0]["name"] == "Office hours"
    assert msp_entry["sla_policies"][0]["business_hours"]["fri"] == [["08:00", "12:00"], ["13:00", "16:00"]]
    assert msp_entry["children"][0]["sla_policy"] == "Office hours"
    rich = exported["email_templates"][1]
    assert (rich["event"], rich["subject"], rich["text_source"]) == ("reopened", "Reopened: {{ ticket.subject }}", None)
    assert "is open again" in rich["body"]
    # Issue #17: a client's language and the acknowledgement alternatives in the same file.
    alternative = exported["email_templates"][2]
    assert (alternative["client"], alternative["event"], alternative["variant"]) == (
        "Demo MSP", "ticket_created", "after-hours")
    contoso = exported["clients"][0]["children"][0]
    assert (contoso["name"], contoso["language"]) == ("Contoso", "de")
    mailbox = exported["mailboxes"][0]
    assert mailbox["acknowledgement_variant"] == "short"
    assert [r.get("acknowledgement_variant") for r in mailbox["routes"]] == [None, "after-hours", None]
