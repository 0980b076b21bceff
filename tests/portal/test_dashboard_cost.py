"""What one refresh of the dashboard (every 30 s, per open tab) costs the database: a number of
SQL statements that does not grow with the MSP's clients, mailboxes and tickets."""

from datetime import timedelta

import pytest

from portal.extensions import db
from portal.models import TenantConsent
from portal.models.base import utcnow
from portal.services import commit
from portal.services import microsoft_app as app_svc
from portal.services.mailbox_alerts import send_expiry_alerts
from portal.services.mailboxes import save_mailbox
from portal.services.tickets import change_status
from tests.mailfactory import email

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def add_clients(app, world, msp, box, ana, names, mailboxes_each):
    """Clients, each with a ticket closed today and app-only Microsoft 365 mailboxes (signing
    in with the MSP's app, whose secret expires soon: listed under sign-in grants), half of
    them failing and all of them overdue (so that the stalled check asks Redis)."""
    now = utcnow()
    for name in names:
        client = world.client(msp, name, allow=[f"{name.lower()}.example"])
        db.session.add(TenantConsent(msp_id=msp.id, client_id=client.id, tenant=TENANT_ID, app_id=APP_ID))
        commit()
        for n in range(mailboxes_each):
            mailbox, _ = save_mailbox(msp, client, {
                "address": f"help{n}@{name.lower()}.example", "host": "outlook.office365.com",
                "username": f"help{n}@{name.lower()}.example", "auth": "oauth2",
                "oauth": {"provider": "microsoft", "flow": "app"}}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"],
                actor=None)
            mailbox.status, mailbox.failure_count = "active", n % 2
            mailbox.alert_recipients = ["noc@acme.example"]
            mailbox.next_poll_at, mailbox.last_success_at = now - timedelta(hours=1), now - timedelta(hours=2)
        ticket = world.deliver(box, email(sender=f"someone@{name.lower()}.example", subject=f"{name} printer")).ticket
        change_status(ticket, "closed", ana)
        world.deliver(box, email(sender=f"someone@{name.lower()}.example", subject=f"{name} scanner"))
        commit()


@pytest.fixture
def desk(app, world):
    """Acme MSP with its admin Ana, a password mailbox mail comes in through, and its Microsoft
    365 app whose client secret expires in 2 days."""
    msp = world.msp("Acme MSP")
    ana = world.user(msp, email="ana@acme.example")
    box = world.mailbox(msp, acknowledge=False, status="active")
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": "a-secret",
                                     "secret_expires": (utcnow() + timedelta(days=2)).date().isoformat()},
                               keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None)
    commit()
    return msp, ana, box


def test_a_dashboard_refresh_costs_the_same_for_one_mailbox_or_ten(app, world, browser, desk, sql_statements):
    msp, ana, box = desk
    add_clients(app, world, msp, box, ana, ["Contoso"], 1)
    browser.sign_in("ana@acme.example")
    browser.hx_get("/")  # the session's first request warms up (the test and the requests share a session)
    with sql_statements() as small:
        page = browser.hx_get("/").get_data(as_text=True)
    assert "help0@contoso.example" in page
    add_clients(app, world, msp, box, ana, ["Fabrikam", "Northwind", "Tailspin", "Wingtip"], 2)
    browser.hx_get("/")  # as above: the rows the test changed are read again once
    with sql_statements() as big:
        page = browser.hx_get("/").get_data(as_text=True)
    assert "help1@wingtip.example" in page and 'id="chart-' in page  # all of it is drawn
    assert len(big) == len(small) <= 24, "\n".join(" ".join(s.split())[:160] for s in big)


def test_the_hourly_expiry_alerts_look_the_msps_apps_up_once(app, world, desk, sql_statements):
    msp, ana, box = desk
    add_clients(app, world, msp, box, ana, ["Contoso", "Fabrikam", "Northwind"], 2)
    with sql_statements() as seen:
        made = send_expiry_alerts(utcnow())
    assert len(made) == 6  # each mailbox is told of its app's secret
    assert len([s for s in seen if "FROM msp_microsoft_apps" in s]) == 1
