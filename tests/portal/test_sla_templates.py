"""The SLA templates in the template editor: listed, documented, checked and previewed like the
others, and an edited one is what the staff receive."""

from datetime import timedelta

import pytest

from portal.mail.render import load_default
from portal.models.base import utcnow
from portal.services import commit
from tests.mailfactory import email
from tests.services.test_sla_alerts import make_policy, run, start

SLA_EVENTS = ("sla_warning", "sla_breached", "sla_changed")


def test_the_editor_lists_documents_and_previews_each_sla_template(admin, tree):
    contoso = tree[1]
    listing = admin.get(f"/clients/{contoso.id}/emails").get_data(as_text=True)
    for event in SLA_EVENTS:
        assert f"/clients/{contoso.id}/emails/{event}" in listing
        page = admin.get(f"/clients/{contoso.id}/emails/{event}").get_data(as_text=True)
        assert "sla.resolution_due" in page and "sla.policy" in page
        text, html = load_default(event)
        checked = admin.post(f"/clients/{contoso.id}/emails/{event}/check", {"text_source": text, "html_source": html},
                             htmx=True).get_data(as_text=True)
        assert "T-1042" in checked and "line 1" not in checked and "line 2" not in checked
        preview = admin.post(f"/clients/{contoso.id}/emails/{event}/preview", {"text_source": text, "html_source": html})
        assert preview.status_code == 200 and "2024-03-0" in preview.get_data(as_text=True)  # the sample due times
    warning = admin.post(f"/clients/{contoso.id}/emails/sla_warning/check",
                         {"text_source": load_default("sla_warning")[0], "html_source": ""}, htmx=True)
    assert "SLA warning: first response due 2024-03-05 15:20 UTC" in warning.get_data(as_text=True)
    typo = admin.post(f"/clients/{contoso.id}/emails/sla_breached/check",
                      {"text_source": "Late\n{{ sla.overdue }}", "html_source": ""}, htmx=True)
    assert "line 2" in typo.get_data(as_text=True)


@pytest.mark.usefixtures("smtp_gateway")
def test_an_sla_template_edited_on_the_msp_is_the_one_sent(admin, world, msp, smtp_server):
    box = world.mailbox(msp, acknowledge=False, alert_recipients=["noc@acme.example"])
    saved = admin.post(f"/clients/{msp.id}/emails/sla_breached",
                       {"text_source": "LATE {{ ticket.reference }} ({{ sla.clock }}, {{ sla.policy }})\n"
                                       "Was due {{ sla.due }}.\n", "html_source": ""})
    assert saved.status_code == 303
    ticket = world.deliver(box, email(sender="bob@example.org", subject="Help")).ticket
    row = make_policy(msp, name="Gold")
    t0 = utcnow() - timedelta(hours=10)
    start(ticket, row, t0)
    commit()
    run(t0 + timedelta(minutes=61))
    got = [m for m in smtp_server.messages if "LATE" in m.message["Subject"]]
    assert [m.message["Subject"] for m in got] == [f"[{ticket.reference}] LATE {ticket.reference} (first response, Gold)"]
    assert f"Was due {(t0 + timedelta(hours=1)):%Y-%m-%d %H:%M} UTC." in got[0].message.get_body(("plain",)).get_content()
