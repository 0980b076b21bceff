import pytest

from portal.mail.classify import classify
from portal.mail.parse import parse_email
from tests.mail.conftest import build


def kind(headers=None, body="Hello\n"):
    return classify(parse_email(build(headers or {}, body)))


def test_a_persons_mail_is_not_auto_generated():
    k = kind({"Subject": "Printer broken", "Auto-Submitted": "no", "Precedence": "first-class"})
    assert (k.auto_generated, k.auto_reason, k.bounce, k.out_of_office, k.priority) == (False, None, False, False, "normal")


@pytest.mark.parametrize("headers, reason_start", [
    ({"X-Autoreply": "yes"}, "X-Autoreply"),
    ({"X-Autorespond": "vacation"}, "X-Autorespond"),
    ({"Auto-Submitted": "auto-generated"}, "Auto-Submitted: auto-generated"),
    ({"Precedence": "bulk"}, "Precedence: bulk"),
    ({"Precedence": "auto_reply"}, "Precedence: auto_reply"),
    ({"Precedence": "junk"}, "Precedence: junk"),
    ({"Precedence": "list"}, "Precedence: list"),
    ({"Return-Path": "<>"}, "Return-Path: <>"),
    ({"From": "Mail Delivery System <MAILER-DAEMON@mx.example>"}, "sender MAILER-DAEMON@mx.example"),
    ({"From": "postmaster@mx.example"}, "sender postmaster@mx.example"),
    ({"X-Loop": "helpdesk"}, "X-Loop"),
    ({"X-Auto-Response-Suppress": "All"}, "X-Auto-Response-Suppress"),
])
def test_auto_generated_reasons(headers, reason_start):
    k = kind(headers)
    assert k.auto_generated and k.auto_reason.startswith(reason_start)


def test_auto_response_suppress_for_read_receipts_only_is_not_auto():
    assert not kind({"X-Auto-Response-Suppress": "DR, RN"}).auto_generated


def test_multipart_report_is_auto_and_a_bounce_with_the_original_recipient():
    body = ("--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
            "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example\n\n"
            "Original-Recipient: rfc822;alias@customer.example\nFinal-Recipient: rfc822;real@mx.customer.example\n"
            "Action: failed\nStatus: 5.1.1\n\n"
            "Final-Recipient: rfc822;fine@customer.example\nAction: delivered\nStatus: 2.0.0\n"
            "--B\nContent-Type: message/rfc822\n\nFrom: support@msp.example\nMessage-ID: <orig.1@msp.example>\n"
            "Subject: [T-5] hi\n\nhi\n--B--\n")
    k = kind({"Content-Type": 'multipart/report; report-type=delivery-status; boundary="B"',
              "From": "MAILER-DAEMON@mx.customer.example"}, body)
    assert k.auto_generated and k.auto_reason.startswith("Content-Type: multipart/report")
    assert k.bounce and k.bounced_recipients == ["alias@customer.example"] and k.bounce_permanent is True
    assert k.bounce_original_message_id == "<orig.1@msp.example>"


def test_delay_report_is_a_temporary_bounce():
    body = ("--B\nContent-Type: text/plain\n\nStill trying.\n--B\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822;slow@customer.example\nAction: delayed\n"
            "Status: 4.4.1\n--B--\n")
    k = kind({"Content-Type": 'multipart/report; report-type=delivery-status; boundary="B"'}, body)
    assert k.bounce and k.bounced_recipients == ["slow@customer.example"] and k.bounce_permanent is False


def test_exim_bounce_uses_x_failed_recipients():
    k = kind({"From": "Mail Delivery System <Mailer-Daemon@mx.example>", "Subject": "Mail delivery failed",
              "X-Failed-Recipients": "gone@customer.example"},
             "This message was created automatically by mail delivery software.\n")
    assert k.bounce and k.bounced_recipients == ["gone@customer.example"]


def test_postfix_style_text_bounce():
    body = ("This is the mail system at host mx.example.\n\nI'm sorry to have to inform you that your message\n"
            "could not be delivered to one or more recipients.\n\n"
            "<nobody@customer.example>: host mx.customer.example said: 550 5.1.1 User unknown\n\n"
            "--- Below this line is a copy of the message.\n\nFrom: support@msp.example\nTo: other@else.example\n")
    k = kind({"From": "MAILER-DAEMON@mx.example", "Subject": "Undelivered Mail Returned to Sender"}, body)
    assert k.bounced_recipients == ["nobody@customer.example"] and k.bounce_permanent


def test_a_person_complaining_about_undelivered_mail_is_no_bounce():
    k = kind({"Subject": "Undelivered mail to our CEO?"}, "Hi, our mail to boss@customer.example seems lost.\n")
    assert not k.bounce and not k.auto_generated


@pytest.mark.parametrize("subject", [
    "Out of Office: Printer", "Automatic reply: Invoice", "Abwesenheitsnotiz: Termin",
    "Réponse automatique : Facture", "Respuesta automática: pedido", "Autosvar: faktura",
    "Automatisch antwoord: factuur", "自动回复: 发票",
])
def test_out_of_office_subjects(subject):
    k = kind({"Subject": subject})
    assert k.out_of_office and k.auto_generated


def test_exchange_out_of_office_headers():
    k = kind({"Subject": "Lorem", "X-MS-Has-Attach": "", "X-Auto-Response-Suppress": "All",
              "X-MS-Exchange-Inbox-Rules-Loop": "a@b.example"})
    assert k.out_of_office
    assert not kind({"Subject": "Lorem", "X-MS-Exchange-Inbox-Rules-Loop": "a@b.example"}).out_of_office


def test_auto_replied_is_out_of_office():
    assert kind({"Auto-Submitted": "auto-replied; owner-email=x@y.example"}).out_of_office


@pytest.mark.parametrize("headers, expected", [
    ({"Importance": "High"}, "high"), ({"Importance": "low"}, "low"),
    ({"X-Priority": "1 (Highest)"}, "high"), ({"X-Priority": "2"}, "high"), ({"X-Priority": "3"}, "normal"),
    ({"X-Priority": "5 (Lowest)"}, "low"), ({"X-MSMail-Priority": "High"}, "high"),
    ({"Priority": "urgent"}, "high"), ({"Priority": "non-urgent"}, "low"), ({}, "normal"),
    ({"Importance": "normal", "X-Priority": "1"}, "normal"),
])
def test_priority(headers, expected):
    assert kind(headers).priority == expected
