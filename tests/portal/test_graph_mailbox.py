"""A Graph mailbox's connection test (the page, the form, the command line) against the local
Graph server, and its page showing the API URL."""

import json

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Mailbox
from portal.services import ValidationError, commit
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailboxes import GRAPH_NEEDS_GRANT, GRAPH_URL_CHANGED, check_connection, probe_settings
from tests.inbound.test_fetch_graph import ADDRESS, TOKEN, email, graph_mailbox


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def test_check_connection_reads_the_inbox_and_keeps_the_answer(app, world, msp, graph_server):
    mailbox = graph_mailbox(app, world, msp, graph_server)
    graph_server.deliver(ADDRESS, email())
    graph_server.deliver(ADDRESS, email())
    result = check_connection(mailbox, keys(app))
    assert result.ok, result.message
    assert result.message == f"Connected to Microsoft Graph at {graph_server.api_url} for {ADDRESS}; the Inbox has 2 messages."
    assert graph_server.requests[-1][1] == f"/v1.0/users/{ADDRESS}/mailFolders/inbox"
    assert mailbox.last_test_ok is True and mailbox.last_test_message == result.message


@pytest.mark.parametrize("trouble, words", [
    ("refused", "Microsoft Graph refused the access token for helpdesk@contoso.com (InvalidAuthenticationToken: "),
    ("denied", "the app has no permission to the mailbox helpdesk@contoso.com (ErrorAccessDenied: Access is denied. "
               "Check credentials and try again.): ask the customer's admin"),
    ("unknown", "the mailbox helpdesk@contoso.com was not found at Microsoft Graph (ErrorInvalidUser: "),
    ("reconnect", "helpdesk@contoso.com needs reconnecting: its OAuth2 grant was refused (invalid_grant)"),
])
def test_a_failing_connection_test_says_why_in_plain_words(app, world, msp, graph_server, trouble, words):
    mailbox = graph_mailbox(app, world, msp, graph_server)
    if trouble == "refused":
        graph_server.refuse(TOKEN)
    elif trouble == "denied":
        graph_server.deny(ADDRESS)
    elif trouble == "unknown":
        graph_server.mailboxes.clear()
    else:
        oauth_svc.reconnect_needed(mailbox.oauth, "invalid_grant")
    result = check_connection(mailbox, keys(app))
    assert not result.ok and words in result.message and TOKEN not in result.message
    assert mailbox.last_test_ok is False and words in mailbox.last_test_message


def test_the_form_test_sends_the_token_only_to_the_saved_api_url(app, world, msp, graph_server):
    mailbox = graph_mailbox(app, world, msp, graph_server)
    values = {"protocol": "graph", "address": ADDRESS, "api_url": graph_server.api_url + "/"}
    assert probe_settings(values, keys(app), mailbox=mailbox).ok
    with pytest.raises(ValidationError) as refused:
        probe_settings({**values, "api_url": "https://graph.attacker.example/v1.0"}, keys(app), mailbox=mailbox)
    assert refused.value.errors == {"api_url": [GRAPH_URL_CHANGED]}
    with pytest.raises(ValidationError) as unsaved:
        probe_settings(values, keys(app), mailbox=None)
    assert unsaved.value.errors == {"": [GRAPH_NEEDS_GRANT]}
    assert len(graph_server.requests) == 1  # only the first test reached the server


def test_the_page_shows_the_api_url_and_tests_the_connection(app, world, msp, admin, graph_server):
    mailbox = graph_mailbox(app, world, msp, graph_server)
    page = admin.get(f"/mailboxes/{mailbox.id}").get_data(as_text=True)
    assert f"Microsoft Graph <span class=\"api-url\">{graph_server.api_url}</span>" in page
    assert "mail goes out through Microsoft Graph (sendMail) as helpdesk@contoso.com" in page
    listing = admin.get("/mailboxes").get_data(as_text=True)
    assert f"Microsoft Graph {graph_server.api_url}" in listing
    answer = admin.post(f"/mailboxes/{mailbox.id}/test", htmx=True)
    assert answer.status_code == 200
    assert f"Connected to Microsoft Graph at {graph_server.api_url}" in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(select(Mailbox.last_test_ok).where(Mailbox.id == mailbox.id)) is True


def test_the_command_line_test_exits_non_zero_with_graphs_words(app, world, msp, graph_server):
    graph_mailbox(app, world, msp, graph_server)
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["mail", "test-connection", ADDRESS])
    assert ok.exit_code == 0 and "Connected to Microsoft Graph" in ok.output
    graph_server.deny(ADDRESS)
    commit()
    refused = runner.invoke(args=["mail", "test-connection", ADDRESS])
    assert refused.exit_code == 1 and "ErrorAccessDenied" in refused.output


def test_the_test_email_of_a_graph_mailbox_goes_through_sendmail(app, world, msp, admin, graph_server, redis):
    mailbox = graph_mailbox(app, world, msp, graph_server)
    answer = admin.post(f"/mailboxes/{mailbox.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Sent to qa@acme.example through Microsoft Graph as helpdesk@contoso.com." in answer.get_data(as_text=True)
    (user, raw), = graph_server.sent
    assert user == ADDRESS and b"To: qa@acme.example" in raw and b"From: helpdesk@contoso.com" in raw
    db.session.expire_all()
    history = db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_type == "mailbox", AuditEntry.record_id == mailbox.id)).all()
    assert "test email (OAuth2 grant)" in history
    graph_server.deny(ADDRESS)
    refused = admin.post(f"/mailboxes/{mailbox.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Not sent: the app has no permission to the mailbox helpdesk@contoso.com (ErrorAccessDenied" \
        in refused.get_data(as_text=True)


def test_flask_mail_fetch_reads_a_graph_mailbox_now(app, world, msp, graph_server, redis):
    world.client(msp, "Contoso", allow=["contoso.com"])
    graph_mailbox(app, world, msp, graph_server)
    graph_server.deliver(ADDRESS, email(subject="Printer on fire"))
    result = app.test_cli_runner().invoke(args=["mail", "fetch", ADDRESS])
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert (line["outcome"], line["client"]) == ("created", "Contoso")
    assert all(m.is_read for m in graph_server.folder(ADDRESS))
    graph_server.refuse(TOKEN)
    refused = app.test_cli_runner().invoke(args=["mail", "fetch", ADDRESS])
    assert refused.exit_code != 0 and "InvalidAuthenticationToken" in refused.output
