"""Each MSP its own mail settings (issue #17): two MSPs in one installation, each with its own
gateway, staging switches, automatic-mail limit and customer notifications; mail of each goes
through its own gateway and obeys its own switches; an MSP without a value of its own follows the
installation's, also when an operator changes it. Real SMTP servers (aiosmtpd), real Redis."""

import ipaddress

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Message, MspSetting, SmtpServer, User
from portal.outbound import servers
from portal.outbound import settings as svc
from portal.outbound.deliver import automatic_mail_hold, log_automatic_mail
from portal.services import ValidationError, commit, config_io
from portal.services import tickets as ticket_svc
from tests.mailfactory import email
from tests.services.test_config_complete import empty_the_database
from tests.smtp import running_smtp_server
from workers.sending import send_due


@pytest.fixture(scope="module")
def second_smtp():
    """A second aiosmtpd: MSP A's own gateway, so that which gateway sent is plain to see."""
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def two_msps(app, world, smtp_gateway, second_smtp):
    """MSP A (own gateway: second_smtp) and MSP B (the installation's gateway: smtp_gateway), each
    with a customer and a mailbox without an outgoing server of its own."""
    second_smtp.reset()
    app.config["TIDEMARK_JOBS_SYNC"] = False  # the sender runs by hand below
    # Two MSPs: jobs are held to the server-reach rule; the operator allows the test servers' network.
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    a, b = world.msp("Alpha MSP", reference_prefix="AL"), world.msp("Beta MSP", reference_prefix="BE")
    world.client(a, "Contoso", allow=["contoso.com"])
    world.client(b, "Fabrikam", allow=["fabrikam.com"])
    box_a = world.mailbox(a, address="desk@alpha.example", response_address="desk@alpha.example")
    box_b = world.mailbox(b, address="desk@beta.example", response_address="desk@beta.example")
    servers.save_msp_gateway(a.id, {"host": "127.0.0.1", "port": second_smtp.port, "security": "none",
                                    "from": "noreply@alpha.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"],
                             actor=None)
    commit()
    return a, b, box_a, box_b


def sent_by(mailbox_id):
    return db.session.scalars(select(Message).where(Message.direction == "out", Message.mailbox_id == mailbox_id)
                              .order_by(Message.id)).all()


def test_the_sending_order_is_the_mailboxs_own_then_the_msps_then_the_installations(app, two_msps):
    a, b, box_a, box_b = two_msps
    assert servers.outgoing_server(box_a) == servers.msp_gateway(a.id)
    assert servers.outgoing_server(box_b) == servers.installation_gateway()
    own = {"host": "smtp.alpha.example", "port": 587, "security": "starttls"}
    servers.save_outgoing_server(box_a, own, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None)
    assert servers.outgoing_server(box_a) == servers.own_server(box_a)
    box_a.direction = "incoming"  # incoming only: its own server is skipped, the MSP's gateway sends
    assert servers.outgoing_server(box_a) == servers.msp_gateway(a.id)


def test_mail_of_each_msp_uses_its_gateway_and_obeys_its_own_switches(app, world, two_msps, smtp_gateway,
                                                                      second_smtp):
    a, b, box_a, box_b = two_msps
    svc.save_msp_settings(a, {"override_recipient": "qa@alpha.example"}, actor=None)
    svc.save_msp_settings(b, {"block_outgoing": True}, actor=None)
    commit()
    world.deliver(box_a, email(sender="alice@contoso.com", to=[box_a.address], subject="Printer"))
    world.deliver(box_b, email(sender="bob@fabrikam.com", to=[box_b.address], subject="Scanner"))
    send_due()
    # A: through its own gateway, to its override address; the installation's gateway saw nothing of it.
    assert [r.rcpt_tos for r in second_smtp.messages] == [["qa@alpha.example"]]
    assert second_smtp.last().message["From"].addresses[0].addr_spec == "desk@alpha.example"
    [ack_a] = sent_by(box_a.id)
    assert ack_a.delivery == "sent" and "to qa@alpha.example instead of alice@contoso.com" in ack_a.delivery_note
    # B: blocked by its own switch, not sent anywhere.
    [ack_b] = sent_by(box_b.id)
    assert ack_b.delivery == "blocked" and smtp_gateway.messages == []
    # The installation's own values are untouched by either.
    assert svc.get_setting("block_outgoing") is False and svc.get_setting("override_recipient") is None

    # B goes back to inheriting: its next mail goes out through the installation's gateway, to the customer.
    svc.save_msp_settings(b, {}, actor=None)
    commit()
    world.deliver(box_b, email(sender="carol@fabrikam.com", to=[box_b.address], subject="Monitor"))
    send_due()
    assert [r.rcpt_tos for r in smtp_gateway.messages] == [["carol@fabrikam.com"]]
    assert len(second_smtp.messages) == 1


def test_a_gateway_removed_sends_through_the_installations_again(app, world, two_msps, smtp_gateway, second_smtp):
    a, _b, box_a, _box_b = two_msps
    assert servers.remove_msp_gateway(a.id, actor=None)
    commit()
    assert servers.msp_gateway(a.id) is None and servers.installation_gateway() is not None
    world.deliver(box_a, email(sender="alice@contoso.com", to=[box_a.address], subject="Printer"))
    send_due()
    assert [r.rcpt_tos for r in smtp_gateway.messages] == [["alice@contoso.com"]] and second_smtp.messages == []


def test_the_automatic_mail_limit_is_each_msps_and_follows_the_installation_default(app, two_msps):
    a, b, _box_a, _box_b = two_msps
    svc.save_msp_settings(a, {"auto_mail_limit_per_hour": 1}, actor=None)
    for msp, address in ((a, "alice@contoso.com"), (b, "bob@fabrikam.com")):
        log_automatic_mail(msp.id, address, "Earlier", None)
    db.session.flush()
    held = automatic_mail_hold(a.id, "alice@contoso.com", "Later", same_subject_rule=False)
    assert held == "alice@contoso.com already got 1 automatic mails in the last hour (the limit is 1)"
    assert automatic_mail_hold(b.id, "bob@fabrikam.com", "Later", same_subject_rule=False) is None
    # The operator lowers the installation's default: B, without a value of its own, follows it.
    svc.save_settings({"auto_mail_limit_per_hour": 1}, actor=None)
    assert "the limit is 1" in automatic_mail_hold(b.id, "bob@fabrikam.com", "Later", same_subject_rule=False)
    svc.save_msp_settings(a, {"auto_mail_limit_per_hour": 5}, actor=None)  # A's own stays A's
    assert automatic_mail_hold(a.id, "alice@contoso.com", "Later", same_subject_rule=False) is None


def test_one_msps_automatic_mail_to_an_address_does_not_count_against_anothers(app, two_msps):
    """MSP A's portal, made to acknowledge forged mail "from" bob@fabrikam.com again and again,
    must not use up MSP B's hourly limit for bob and hold back B's acknowledgements to him."""
    a, b, _box_a, _box_b = two_msps
    for msp in (a, b):
        svc.save_msp_settings(msp, {"auto_mail_limit_per_hour": 2}, actor=None)
    for n in range(5):
        log_automatic_mail(a.id, "bob@fabrikam.com", f"Forged {n}", None)
    db.session.flush()
    assert "already got 5 automatic mails" in automatic_mail_hold(a.id, "bob@fabrikam.com", "Later",
                                                                   same_subject_rule=False)
    assert automatic_mail_hold(b.id, "bob@fabrikam.com", "Later", same_subject_rule=False) is None


def test_customer_notifications_come_from_the_client_its_parents_the_msp_then_the_installation(app, world):
    msp = world.msp("Alpha MSP")
    contoso = world.client(msp, "Contoso")
    berlin = world.client(contoso, "Contoso Berlin")
    assert svc.customer_notifications_in_effect(berlin) == (["closed", "reopened"], None)  # the built-in default
    svc.save_settings({"customer_notifications": ["closed"]}, actor=None)
    assert svc.customer_notifications(berlin) == ["closed"]  # the installation's
    svc.save_msp_settings(msp, {"customer_notifications": ["owner_changed"]}, actor=None)
    assert svc.customer_notifications(berlin) == ["owner_changed"]  # the MSP's
    svc.save_client_notifications(contoso, ["priority_changed", "reopened"], actor=None)
    assert svc.customer_notifications_in_effect(berlin) == (["reopened", "priority_changed"], contoso)
    svc.save_client_notifications(berlin, [], actor=None)  # none at all is a choice of its own
    assert svc.customer_notifications_in_effect(berlin) == ([], berlin)
    svc.save_client_notifications(berlin, None, actor=None)
    assert svc.customer_notifications(berlin) == ["reopened", "priority_changed"]
    with pytest.raises(ValidationError) as refused:
        svc.save_client_notifications(berlin, ["birthday"], actor=None)
    assert refused.value.errors["customer_notifications"][0].startswith("Unknown: birthday.")


def test_a_closed_ticket_tells_the_customer_as_their_client_chooses(app, world, two_msps):
    a, b, box_a, box_b = two_msps
    contoso = db.session.scalar(select(Client).where(Client.name == "Contoso"))
    svc.save_client_notifications(contoso, [], actor=None)  # Contoso's customers hear of nothing
    ana = world.user(a, "ana@alpha.example")
    bea = world.user(b, "bea@beta.example")
    ticket_a = world.deliver(box_a, email(sender="alice@contoso.com", to=[box_a.address], subject="P")).ticket
    ticket_b = world.deliver(box_b, email(sender="bob@fabrikam.com", to=[box_b.address], subject="S")).ticket
    ticket_svc.change_status(ticket_a, "closed", db.session.get(User, ana.id))
    ticket_svc.change_status(ticket_b, "closed", db.session.get(User, bea.id))
    commit()
    events = lambda box: [m.details["event"] for m in sent_by(box.id)]  # noqa: E731
    assert "closed" not in events(box_a) and "closed" in events(box_b)


def test_wrong_values_of_an_msp_are_named_and_change_nothing(app, world):
    msp = world.msp("Alpha MSP")
    with pytest.raises(ValidationError) as refused:
        svc.save_msp_settings(msp, {"auto_mail_limit_per_hour": 0, "override_recipient": "qa@",
                                    "block_outgoing": "yes", "limit": 3}, actor=None)
    errors = refused.value.errors
    assert errors["auto_mail_limit_per_hour"] == ["The limit is a whole number from 1 to 1000."]
    assert "override_recipient" in errors and errors["block_outgoing"] == ["This is true or false."]
    assert errors[""][0].startswith("Unknown settings: limit.")
    assert db.session.scalars(select(MspSetting)).all() == []


def test_two_msps_round_trip_through_the_configuration_file_unchanged(app, world, two_msps, smtp_gateway):
    a, b, _box_a, _box_b = two_msps
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    svc.save_settings({"block_outgoing": True, "auto_mail_limit_per_hour": 7}, actor=None)
    svc.save_msp_settings(a, {"block_outgoing": False, "override_recipient": "qa@alpha.example",
                              "customer_notifications": []}, actor=None)
    svc.save_msp_settings(b, {"auto_mail_limit_per_hour": 3, "override_recipient": None}, actor=None)
    servers.save_msp_gateway(b.id, {"host": "relay.beta.example", "port": 2525, "security": "starttls",
                                    "username": "beta", "password": "beta-relay-pw"}, keys=keys, actor=None)
    svc.save_client_notifications(db.session.scalar(select(Client).where(Client.name == "Fabrikam")),
                                  ["owner_changed"], actor=None)
    commit()
    text = config_io.dump(config_io.export_config(keys=keys, with_secrets=True))
    assert "beta-relay-pw" in text and "beta-relay-pw" not in config_io.dump(config_io.export_config(keys=keys))
    data = config_io.load(text, strict=True)
    assert data["clients"][0]["mail_settings"] == {"block_outgoing": False, "override_recipient": "qa@alpha.example",
                                                   "customer_notifications": []}
    assert data["clients"][1]["mail_settings"] == {"override_recipient": None, "auto_mail_limit_per_hour": 3}
    assert data["clients"][1]["outgoing"]["host"] == "relay.beta.example"

    empty_the_database()
    config_io.import_config(data, keys=keys)
    commit()
    assert config_io.dump(config_io.export_config(keys=keys, with_secrets=True)) == text
    beta = db.session.scalar(select(Client).where(Client.name == "Beta MSP"))
    assert svc.get_setting("auto_mail_limit_per_hour", beta.id) == 3 and svc.get_setting("block_outgoing", beta.id)
    assert db.session.scalar(select(SmtpServer).where(SmtpServer.msp_id == beta.id)).host == "relay.beta.example"


def test_the_file_refuses_mail_settings_below_the_top_level_and_names_bad_values(app, world):
    msp = world.msp("Alpha MSP")
    world.client(msp, "Contoso")
    below = {"clients": [{"name": "Alpha MSP", "children": [{"name": "Contoso", "mail_settings": {}}]}]}
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config(below, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    assert refused.value.errors == {"clients[0].children[0].mail_settings": [
        "Only an MSP (a top-level entry) has its own mail settings and gateway."]}
    db.session.rollback()
    bad = {"clients": [{"name": "Alpha MSP", "mail_settings": {"auto_mail_limit_per_hour": 0},
                        "customer_notifications": ["birthday"]}]}
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config(bad, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    assert "clients[0].customer_notifications" in refused.value.errors
    assert config_io.unknown_fields({"clients": [{"name": "A", "mail_settings": {"limit": 1},
                                                  "outgoing": {"hots": "x"}}]}) == {
        "clients[0].mail_settings": [
            "Unknown field: limit. Known: auto_mail_limit_per_hour, block_outgoing, customer_notifications, "
            "override_recipient."],
        "clients[0].outgoing": [
            "Unknown field: hots. Known: auth, from, from_address, host, password, port, security, timeout, "
            "username, verify_tls."]}
