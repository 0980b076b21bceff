"""Configuration as code for OAuth2 mailboxes: the issue's YAML names, idempotence, errors that
name the YAML path, and secrets: the client secret only with --with-secrets, tokens never."""

import textwrap
from datetime import date, datetime, timedelta, timezone

import pytest
import yaml
from sqlalchemy import func, select

from portal.models import AuditEntry, Client, Mailbox, MailboxOAuth
from portal.services import commit
from portal.services import mailbox_oauth as oauth_svc

# The example of issue #15, with its placeholders filled in.
ISSUE_YAML = textwrap.dedent("""
    clients:
      - name: Demo MSP
        children:
          - name: Contoso
    mailboxes:
      - address: helpdesk@contoso.com
        client: Contoso
        protocol: imap            # imap | pop3 | graph
        auth: oauth2              # password (default) | oauth2
        host: outlook.office365.com
        username: helpdesk@contoso.com
        oauth:
          provider: microsoft     # microsoft | google | generic
          flow: app               # delegated | app
          tenant: contoso.onmicrosoft.com      # microsoft
          client_id: "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
          client_secret: "s3cr3t~Value_of.the-app"
          secret_expires: 2027-06-30
          scopes: ["https://outlook.office365.com/.default"]
      - address: graph@contoso.com
        client: Contoso
        protocol: graph
        auth: oauth2
        oauth:
          provider: microsoft
          flow: app
          tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47
          client_id: "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
          client_secret: "s3cr3t~Value_of.the-app"
        api_url: http://127.0.0.1:9999/v1.0   # graph; overridable for tests
      - address: support@fabrikam.example
        client: Demo MSP
        host: imap.fabrikam.example
        username: support
        auth: oauth2
        oauth:
          provider: generic
          flow: delegated
          client_id: tidemark
          token_url: https://id.fabrikam.example/oauth2/token
          authorize_url: https://id.fabrikam.example/oauth2/authorize
          scopes: [imap, offline_access]
""")
SECRET = "s3cr3t~Value_of.the-app"


def run(app, tmp_path, text, *args):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return app.test_cli_runner().invoke(args=["config", "import", str(path), *args])


def export(app, *args):
    result = app.test_cli_runner().invoke(args=["config", "export", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_issues_example_imports_and_a_second_import_changes_nothing(app, db, tmp_path):
    first = run(app, tmp_path, ISSUE_YAML)
    assert first.exit_code == 0, first.output
    assert "5 created" in first.output  # two clients, three mailboxes
    imap = db.session.scalar(select(Mailbox).where(Mailbox.address == "helpdesk@contoso.com"))
    assert (imap.protocol, imap.auth, imap.api_url) == ("imap", "oauth2", None)
    o = imap.oauth
    assert (o.provider, o.flow, o.tenant, o.client_id) == ("microsoft", "app", "contoso.onmicrosoft.com",
                                                           "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b")
    assert o.secret_expires == date(2027, 6, 30) and o.scopes == ["https://outlook.office365.com/.default"]
    assert oauth_svc.client_secret_of(o, app.config["TIDEMARK_ENCRYPTION_KEY"]) == SECRET
    graph = db.session.scalar(select(Mailbox).where(Mailbox.address == "graph@contoso.com"))
    assert (graph.protocol, graph.api_url, graph.host) == ("graph", "http://127.0.0.1:9999/v1.0", "")
    generic = db.session.scalar(select(Mailbox).where(Mailbox.address == "support@fabrikam.example"))
    assert generic.oauth.token_url == "https://id.fabrikam.example/oauth2/token"
    entries = db.session.scalar(select(func.count()).select_from(AuditEntry))
    second = run(app, tmp_path, ISSUE_YAML)
    assert "0 created, 0 updated, 5 unchanged" in second.output, second.output
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == entries


def test_export_writes_the_client_secret_only_with_secrets_and_tokens_never(app, db, tmp_path):
    run(app, tmp_path, ISSUE_YAML)
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == "helpdesk@contoso.com"))
    oauth_svc.store_grant(box.oauth, app.config["TIDEMARK_ENCRYPTION_KEY"], access_token="ACCESS-tok-123",
                          refresh_token="REFRESH-tok-456", account="helpdesk@contoso.com",
                          access_expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    commit()
    plain = export(app)
    assert SECRET not in plain and "tok-" not in plain
    with_secrets = export(app, "--with-secrets")
    assert SECRET in with_secrets and "tok-" not in with_secrets
    item = next(m for m in yaml.safe_load(plain)["mailboxes"] if m["address"] == "helpdesk@contoso.com")
    assert item["auth"] == "oauth2" and "api_url" not in item
    assert item["oauth"] == {"provider": "microsoft", "flow": "app", "tenant": "contoso.onmicrosoft.com",
                             "client_id": "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "secret_expires": date(2027, 6, 30),
                             "scopes": ["https://outlook.office365.com/.default"]}
    graph = next(m for m in yaml.safe_load(plain)["mailboxes"] if m["address"] == "graph@contoso.com")
    assert graph["api_url"] == "http://127.0.0.1:9999/v1.0" and not {"host", "port", "security"} & set(graph)
    # Both exports import back without a change, and the grant survives an export without secrets.
    for text in (plain, with_secrets):
        again = run(app, tmp_path, text)
        assert again.exit_code == 0 and "0 created, 0 updated" in again.output, again.output
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).oauth.state == "connected"


def test_changing_the_client_id_in_the_file_drops_the_grant(app, db, tmp_path):
    run(app, tmp_path, ISSUE_YAML)
    box = db.session.scalar(select(Mailbox).where(Mailbox.address == "helpdesk@contoso.com"))
    oauth_svc.store_grant(box.oauth, app.config["TIDEMARK_ENCRYPTION_KEY"], access_token="a", refresh_token="r",
                          access_expires_at=None, account="helpdesk@contoso.com")
    commit()
    result = run(app, tmp_path, ISSUE_YAML.replace('client_id: "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"',
                                                   'client_id: "another-app"', 1))
    assert "1 updated" in result.output, result.output
    db.session.expire_all()
    row = db.session.get(Mailbox, box.id).oauth
    assert row.client_id == "another-app" and row.state == "not connected" and row.refresh_token_encrypted is None
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.record_id == box.id,
                                                        AuditEntry.record_type == "mailbox")
                               .order_by(AuditEntry.id.desc())).first()
    assert entry.changes["oauth.client_id"] == ["3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "another-app"]
    assert entry.changes["oauth.grant"] == ["connected as helpdesk@contoso.com", "not connected"]


@pytest.mark.parametrize("old, new, path, words", [
    ("tenant: contoso.onmicrosoft.com", "tenant: not a tenant", "mailboxes[0].oauth.tenant", "not a tenant id"),
    ("provider: microsoft     #", "provider: yahoo     #", "mailboxes[0].oauth.provider", "not a provider"),
    ("secret_expires: 2027-06-30", "secret_expires: soon", "mailboxes[0].oauth.secret_expires", "not a date"),
    ("token_url: https://id.fabrikam.example/oauth2/token", "token_url: http://id.fabrikam.example/token",
     "mailboxes[2].oauth.token_url", "must use https"),
    ("scopes: [imap, offline_access]", "scopes: imap offline_access", "mailboxes[2].oauth.scopes", "list of single"),
    ("client_id: tidemark", "colour: blue", "mailboxes[2].oauth", "Unknown OAuth2 settings: colour"),
    ("protocol: imap            #", "protocol: smtp            #", "mailboxes[0].protocol", "not one of imap, pop3, graph"),
    ("auth: oauth2              #", "auth: kerberos            #", "mailboxes[0].auth", "not one of password, oauth2"),
])
def test_errors_name_the_yaml_path_and_nothing_is_imported(app, db, tmp_path, old, new, path, words):
    assert old in ISSUE_YAML
    result = run(app, tmp_path, ISSUE_YAML.replace(old, new, 1))
    assert result.exit_code == 1 and path in result.output and words in result.output, result.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0
    assert db.session.scalar(select(func.count()).select_from(MailboxOAuth)) == 0


def test_the_strict_check_knows_the_oauth_names_and_points_at_a_typo(app):
    from portal.services.config_io import ConfigError, load

    assert load(ISSUE_YAML, strict=True)["mailboxes"][0]["oauth"]["provider"] == "microsoft"
    with pytest.raises(ConfigError) as err:
        load(ISSUE_YAML.replace("secret_expires:", "secret_expiry:", 1), strict=True)
    assert "Unknown field: secret_expiry" in err.value.errors["mailboxes[0].oauth"][0]
