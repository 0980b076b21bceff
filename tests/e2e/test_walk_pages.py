"""A walk through every page of a realistic MSP in a real browser, at desktop and phone width.

Each page must answer 200, run without a script error or CSP violation (the `page` fixture), give
every visible field an accessible name, fit a phone screen without sideways scrolling, and show
where the keyboard focus is. With TIDEMARK_SCREENSHOTS=1 the desktop walk also saves the
screenshots shown in the README (`make screenshots`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.extensions import db
from portal.models import Message
from portal.outbound import servers as outbound_servers
from portal.outbound import templates as outbound_templates
from portal.services import canned, clients, commit, custom_fields, ticket_replies, users
from portal.services import tickets as tickets_svc
from tests.conftest import PASSWORD
from tests.e2e.conftest import expected
from tests.mailfactory import email

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

VPN_HTML = """<p>Hi team,</p>
<p>Since this morning the <b>VPN drops every few minutes</b> for everyone in the Leeds office.
Reconnecting works, but calls and file copies break.</p>
<table><tr><th>Laptop</th><th>Client version</th><th>Drops today</th></tr>
<tr><td>LDS-LT-014</td><td>5.2.1</td><td>11</td></tr>
<tr><td>LDS-LT-022</td><td>5.2.1</td><td>7</td></tr></table>
<p>Could you have a look? It is hurting the sales calls.</p>
<p>Thanks,<br>Alice Moreno<br>Office manager, Contoso</p>"""

# Every visible form field without an accessible name (label, aria-label or aria-labelledby).
UNLABELLED_FIELDS = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, [contenteditable=true]')).filter(el => {
  if (!el.checkVisibility()) return false;
  if ((el.getAttribute('aria-label') || '').trim()) return false;
  const by = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean);
  if (by.some(id => (document.getElementById(id)?.textContent || '').trim())) return false;
  return !Array.from(el.labels || []).some(l => l.textContent.trim());
}).map(el => el.outerHTML.slice(0, 160))"""

SIDEWAYS = "() => document.scrollingElement.scrollWidth - window.innerWidth"
# What reaches past the right edge: elements that stick out, and elements whose text spills over.
TOO_WIDE = """() => Array.from(document.querySelectorAll('main *, header *')).filter(el =>
    el.getBoundingClientRect().right > window.innerWidth + 1 || (el.scrollWidth > el.clientWidth + 1
    && el.clientWidth > 0 && getComputedStyle(el).overflowX === 'visible'))
  .slice(-5).map(el => el.outerHTML.slice(0, 100))"""

# What has the focus, and whether a sighted keyboard user can see it.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {tag: 'BODY', visible: false, indicated: false};
  const s = getComputedStyle(el), box = el.getBoundingClientRect();
  return {tag: el.tagName, text: (el.textContent || el.value || '').trim().slice(0, 40),
          visible: el.checkVisibility() && box.width > 0 && box.height > 0,
          indicated: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) || s.boxShadow !== 'none'};
}"""


@dataclass
class Desk:
    msp: object
    contoso: object
    mailbox: object
    route: object
    technician: object
    ticket: object
    unprocessed: object
    other_ticket: str
    other_client: int
    other_mailbox: int


@pytest.fixture
def desk(app, world, smtp_server):
    """Northwind IT: a client tree with allow-lists, a mailbox with routes, tickets with a
    conversation (HTML mail, a reply, the customer's answer, a note), unprocessed mail, users;
    and Globex, another MSP whose records must stay out of reach."""
    app.config["TIDEMARK_OPERATORS"] = ["dana@northwind.example"]  # two MSPs: Dana runs the installation
    outbound_servers.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                                       "from_address": "noreply@northwind.example"},
                                      keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    msp = world.msp("Northwind IT", code="NW", waterline="## Please reply above this line ##", timezone="Europe/London")
    contoso = world.client(msp, "Contoso", allow=["contoso.com", "ceo@contoso-group.example"], code="CONTOSO",
                           waterline="-----Original Message-----")
    berlin = world.client(contoso, "Contoso Berlin", allow=["contoso-berlin.de"], code="CONBER")
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.example", "it.director@gmail.com"], code="FAB")
    tailspin = world.client(msp, "Tailspin Toys", allow=["tailspintoys.example"], code="TAIL")
    clients.set_client_disabled(tailspin, True, None)

    admin = world.user(msp, email="dana@northwind.example", role="admin")
    admin.name, admin.timezone = "Dana Whitfield", "Europe/Berlin"
    tech = world.user(msp, email="tom@northwind.example", role="technician")
    tech.name = "Tom Reyes"
    users.invite_user(msp, "priya@northwind.example", "Priya Shah", "technician", admin)
    former = world.user(msp, email="sam@northwind.example", role="technician")
    former.name = "Sam Okafor"
    users.set_user_disabled(former, True, admin)
    commit()

    box = world.mailbox(msp, address="support@northwind.example", name="Support desk", status="active",
                        aliases=["fabrikam@northwind.example", "help@northwind.example"],
                        alert_recipients=["dana@northwind.example"], routes=[
                            {"name": "Fabrikam desk", "client": fabrikam, "recipients": ["fabrikam@northwind.example"],
                             "default_priority": "high"},
                            {"name": "Contoso Berlin", "client": berlin, "recipients": ["*"],
                             "senders": ["contoso-berlin.de"]},
                            {"name": "Contoso, any address", "client": contoso, "recipients": ["*"],
                             "senders": ["contoso.com"]},
                            {"name": "Everything else", "client": msp, "fallback": True}])
    world.mailbox(msp, address="alerts@northwind.example", name="Monitoring alerts", status="draft", routes=None)

    canned.save(msp, name="Password reset steps", shared=True,
                html="<p>Open <b>https://passwords.northwind.example</b>, choose <i>Forgot password</i> "
                     "and follow the mail we send you.</p>")
    canned.save(contoso, name="VPN client reinstall", shared=False,
                text="Please uninstall the VPN client, restart, and install version 5.3 from the portal.")
    outbound_templates.save_template(contoso, "ticket_created",
                                     "[{{ ticket.reference }}] We have your request: {{ ticket.subject }}\n"
                                     "Hello {{ contact.name }},\n\nThanks for writing to Northwind IT. "
                                     "We answer Contoso within 4 working hours.\n",
                                     "", True, admin)
    commit()

    vpn = world.deliver(box, email(sender="Alice Moreno <alice@contoso.com>", to=["support@northwind.example"],
                                   subject="VPN drops every few minutes", html=VPN_HTML,
                                   body="Since this morning the VPN drops every few minutes.")).ticket
    ticket_replies.reply(vpn, tech, to="alice@contoso.com", cc="", text="", set_status="waiting",
                         html="<p>Hi Alice,</p><p>Thanks for the details. Version 5.2.1 has a known keep-alive bug; "
                              "we are pushing 5.3 to the Leeds laptops tonight.</p><p>Tom</p>")
    commit()
    sent = db.session.scalars(db.select(Message).where(Message.ticket_id == vpn.id, Message.direction == "out")
                              .order_by(Message.id.desc())).first()
    world.deliver(box, email(sender="Alice Moreno <alice@contoso.com>", to=["support@northwind.example"],
                             subject=f"RE: [{vpn.reference}] VPN drops every few minutes",
                             in_reply_to=sent.message_id, references=[sent.message_id],
                             body="Great, thank you! I will tell the team to leave their laptops on.\n\n"
                                  "-----Original Message-----\nFrom: Tom Reyes"))
    ticket_replies.add_note(vpn, tech, "Rollout of 5.3 scheduled in the RMM for 22:00; check the drop count tomorrow.")
    commit()
    world.deliver(box, email(sender="Ben Carter <ben.carter@fabrikam.example>", to=["fabrikam@northwind.example"],
                             subject="New starter on Monday: laptop and accounts",
                             body="Hello,\n\nJoanna Lee starts on Monday in accounts. Please prepare a laptop, "
                                  "a mailbox and access to the finance share.\n\nBen"))
    world.deliver(box, email(sender="monitor@contoso-berlin.de", to=["support@northwind.example"],
                             subject="Disk space low on FS01 (D: 4% free)", headers={"X-Priority": "1"},
                             body="Volume D: on FS01 has 4% free space left."))
    done = world.deliver(box, email(sender="jo@lakeside-bakery.example", to=["support@northwind.example"],
                                    subject="Do you support small offices?",
                                    body="We are a bakery with six PCs. Do you take small customers?")).ticket
    tickets_svc.change_status(done, "resolved", admin)
    commit()
    waiting = world.deliver(box, email(sender="it@newcustomer.example", to=["office@newcustomer.example"],
                                       subject="Printer quote for the new office",
                                       html="<p>Hello, could you send us a <b>quote</b> for two printers?</p>"))
    world.deliver(box, email(sender="newsletter@vendor.example", to=["list@vendor.example"],
                             subject="Your November partner newsletter", body="News from the vendor."))

    globex = world.msp("Globex Services", code="GX", reference_prefix="GX")
    globex_client = world.client(globex, "Initech", allow=["initech.example"])
    globex_box = world.mailbox(globex, address="desk@globex.example")
    other = world.deliver(globex_box, email(sender="peter@initech.example", to=["desk@globex.example"],
                                            subject="TPS report printer")).ticket
    custom_fields.save_field(msp, custom_fields.FieldInput("Site", "choice", ["Leeds", "London"]), actor=None)
    custom_fields.save_field(msp, custom_fields.FieldInput("Asset", "text"), actor=None)
    commit()
    route = next(r for r in box.routes if r.name == "Contoso, any address")
    return Desk(msp, contoso, box, route, tech, vpn, waiting.message, other.reference, globex_client.id, globex_box.id)


def sign_in(page, live_server, address):
    page.goto(live_server + "/sign-in?next=/account")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # Attached, not visible: on a phone the menu is folded.
    expect(page.locator("nav[aria-label=Main]")).to_be_attached()


def admin_pages(d: Desk) -> list[tuple[str, str, str | None]]:
    """(name, path, screenshot file or None), in the order of the nav."""
    c, m = d.contoso.id, d.mailbox.id
    return [
        ("dashboard", "/", "dashboard"),
        ("tickets", "/tickets", "tickets"),
        ("ticket", f"/tickets/{d.ticket.reference}", "ticket"),
        ("unprocessed", "/unprocessed", "unprocessed"),
        ("unprocessed message", f"/unprocessed/{d.unprocessed.id}", None),
        ("clients", "/clients", "clients"),
        ("client", f"/clients/{c}", None),
        ("client form", f"/clients/{c}/edit", None),
        ("email templates", f"/clients/{c}/emails", None),
        ("email template editor", f"/clients/{c}/emails/ticket_created", None),
        ("canned responses", f"/clients/{c}/emails/canned", None),
        ("new canned response", f"/clients/{c}/emails/canned/new", None),
        ("mailboxes", "/mailboxes", None),
        ("mailbox", f"/mailboxes/{m}", "mailbox"),
        ("mailbox settings", f"/mailboxes/{m}/edit", None),
        ("route form", f"/mailboxes/{m}/routes/{d.route.id}/edit", "route"),
        ("new route", f"/mailboxes/{m}/routes/new", None),
        ("outgoing server", f"/mailboxes/{m}/outgoing", None),
        ("mail settings", "/settings/mail", None),
        ("users", "/users", "users"),
        ("invite a user", "/users/invite", None),
        ("configuration", "/settings/configuration", None),
        ("retention", "/settings/retention", None),
        ("my settings", "/account", None),
        # Last, so that the pages above keep their place in the every-third focus check.
        ("simple email template editor", f"/clients/{c}/emails/closed", "email-template"),
        ("email layout", f"/clients/{c}/emails/layout", None),
        ("custom fields", "/settings/custom-fields", None),
        ("custom field form", f"/settings/custom-fields/{custom_fields.list_fields(d.msp.id)[0].id}/edit", None),
        ("service report", f"/clients/{c}/service-report", None),
        ("service report of the MSP", f"/clients/{d.msp.id}/service-report", None),
    ]


def page_problems(page, name, phone) -> list[str]:
    problems = []
    unlabelled = page.evaluate(UNLABELLED_FIELDS)
    if unlabelled:
        problems.append(f"{name}: fields without a label: {unlabelled}")
    if phone:
        overflow = page.evaluate(SIDEWAYS)
        if overflow > 1:
            problems.append(f"{name}: the page scrolls sideways by {overflow}px at phone width: "
                            f"{page.evaluate(TOO_WIDE)}")
    return problems


def focus_problems(page, name, presses=5) -> list[str]:
    """The first Tab reaches "Skip to content"; from the top of the content on, each Tab stop is a
    visible element with a visible focus indicator."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.keyboard.press("Tab")
    focused = page.evaluate(FOCUSED)
    if focused.get("text") != "Skip to content" or not (focused["visible"] and focused["indicated"]):
        return [f"{name}: the first Tab focused {focused}"]
    page.keyboard.press("Enter")  # skips the nav: the next Tab is in the page's own content
    for n in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["tag"] == "BODY" and n > 0:
            break  # past the page's last control
        if not (focused["visible"] and focused["indicated"]):
            return [f"{name}: Tab {n + 1} in the content focused {focused}"]
        if page.evaluate("() => !document.getElementById('main').contains(document.activeElement)"):
            return [f"{name}: Tab {n + 1} after skipping left the content: {focused}"]
    return []


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_admin_walks_every_page(live_server, page, desk, viewport):
    page.set_viewport_size(VIEWPORTS[viewport])
    phone = viewport == "phone"
    shots = not phone and os.environ.get("TIDEMARK_SCREENSHOTS") == "1"
    if shots:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sign_in(page, live_server, "dana@northwind.example")

    # The nav reaches every area, and it fits on a phone too (behind "Menu").
    if phone:
        page.locator("label.menu-button").click()
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Dashboard", "Tickets", "Unprocessed", "Clients", "Mailboxes", "Mail settings", "Users",
                  "Retention", "Configuration"):
        expect(nav.get_by_role("link", name=re.compile(label))).to_be_visible()
    expect(page.get_by_role("link", name="My settings")).to_be_visible()

    problems: list[str] = []
    for number, (name, path, shot) in enumerate(admin_pages(desk)):
        response = page.goto(live_server + path)
        assert response.status == 200, f"{name} ({path}) answered {response.status}"
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        if shots and shot:
            page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True, caret="initial")
        problems += page_problems(page, name, phone)
        if number % 3 == 0 or name in ("ticket", "route form", "email template editor"):
            problems += focus_problems(page, name)
    assert problems == [], "\n".join(problems)

    # Times read in the admin's own time zone (Europe/Berlin), not the MSP's or UTC.
    page.goto(live_server + f"/tickets/{desk.ticket.reference}")
    expect(page.locator(".msg time").first).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d CES?T"))
    # The mail, its acknowledgement, the reply, the customer's answer and the note, in order; the
    # alert to the on-call address apart, folded.
    headers = page.locator("#ticket-conversation > li > header strong").all_inner_texts()
    assert [h.split(" <")[0] for h in headers] == [
        "Alice Moreno", "ticket created to alice@contoso.com",
        "reply to alice@contoso.com", "Alice Moreno", "Internal note by Tom Reyes"]
    expect(page.locator("#ticket-staff summary")).to_contain_text("alert to dana@northwind.example")
    expect(page.locator(".mail-html table td").first).to_have_text("LDS-LT-014")

    # The routing check answers in place, and its answer passes the same checks.
    page.goto(live_server + "/unprocessed/check")
    page.get_by_label("Mailbox", exact=True).select_option(str(desk.mailbox.id))
    page.get_by_label("From", exact=True).fill("alice@contoso.com")
    page.get_by_label("To", exact=True).fill("support@northwind.example")
    page.get_by_label("Subject", exact=True).fill("Outlook keeps asking for my password")
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", name=re.compile("The decision would be"))).to_contain_text("created")
    expect(page.locator(".check-result")).to_contain_text("Contoso, any address")
    assert page_problems(page, "routing check", phone) == []
    if shots:
        page.screenshot(path=str(SCREENSHOTS / "routing-check.png"), full_page=True, caret="initial")


def test_destructive_actions_ask_first(live_server, page, desk):
    asked: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog):
        asked.append(dialog.message)
        dialog.accept() if answer["accept"] else dialog.dismiss()

    page.on("dialog", on_dialog)
    sign_in(page, live_server, "dana@northwind.example")
    c, m = desk.contoso.id, desk.mailbox.id
    # (page, button, what the question names); "No" leaves everything as it was.
    cases = [
        (f"/clients/{c}", page.get_by_role("button", name="Disable"), "Disable Contoso?"),
        (f"/mailboxes/{m}", page.get_by_role("button", name="Delete", exact=True), "Delete the mailbox support@"),
        (f"/mailboxes/{m}", page.get_by_role("button", name="Disable"), "Disable support@northwind.example?"),
        (f"/mailboxes/{m}", page.get_by_role("button", name="Remove Fabrikam desk"), "Remove the route Fabrikam desk?"),
        (f"/clients/{desk.msp.id}/emails/canned", page.get_by_role("button", name="Remove"),
         "Remove the canned response Password reset steps"),
        (f"/clients/{c}/emails/ticket_created", page.get_by_role("button", name="Use the inherited template"),
         "Remove Contoso's own ticket created template"),
        (f"/users/{desk.technician.id}", page.get_by_role("button", name="Disable"), "Disable tom@northwind.example?"),
    ]
    for path, button, question in cases:
        page.goto(live_server + path)
        before = page.locator("main").inner_text()
        count = len(asked)
        button.click()
        for _ in range(50):
            if len(asked) > count:
                break
            page.wait_for_timeout(50)
        assert len(asked) == count + 1 and question in asked[-1], (path, asked[count:])
        page.reload()
        assert page.locator("main").inner_text() == before, f"{path} changed after answering No"
    assert len(asked) == len(cases)

    answer["accept"] = True  # and "Yes" does it
    page.goto(live_server + f"/mailboxes/{m}")
    with page.expect_response(re.compile(r"/routes/\d+/delete$")) as removed:
        page.get_by_role("button", name="Remove Fabrikam desk").click()
    assert removed.value.ok
    # The page itself shows the new list and the message, without a reload by hand.
    expect(page.locator("#routes .route-name")).to_have_text(["Contoso Berlin", "Contoso, any address", "Everything else"])
    expect(page.get_by_text("Route Fabrikam desk removed.")).to_be_visible()


@pytest.fixture
def quiet_page(chromium):
    """A page that fails the test on script errors and CSP violations, but expects the 403 and
    404 answers this walk asks for (the `page` fixture counts a 404 as an error)."""
    context = chromium.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not (
        expected(msg.text) or msg.text.startswith("Failed to load resource") and "404" in msg.text) else None)
    yield page
    context.close()
    assert errors == []


def test_a_technician_gets_403_on_admin_pages_and_404_on_another_msps_records(live_server, quiet_page, desk):
    page = quiet_page
    sign_in(page, live_server, "tom@northwind.example")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Tickets")).to_be_visible()
    for label in ("Mail settings", "Users", "Retention", "Configuration"):
        expect(nav.get_by_role("link", name=label)).to_have_count(0)

    m, c = desk.mailbox.id, desk.contoso.id
    for path in ("/settings/mail", "/settings/configuration", "/settings/retention", "/users", "/users/invite", "/clients/new",
                 f"/clients/{c}/edit", f"/clients/{c}/emails/canned", "/mailboxes/new", f"/mailboxes/{m}/edit",
                 f"/mailboxes/{m}/routes/new", f"/mailboxes/{m}/routes/{desk.route.id}/edit"):
        response = page.goto(live_server + path)
        assert response.status == 403, f"{path} answered {response.status}"
        expect(page.get_by_role("heading", level=1)).to_be_visible()  # a page that says why, with the nav
        expect(page.get_by_role("link", name="Back to the dashboard")).to_be_visible()

    for path in (f"/tickets/{desk.other_ticket}", f"/clients/{desk.other_client}", f"/mailboxes/{desk.other_mailbox}"):
        response = page.goto(live_server + path)
        assert response.status == 404, f"{path} answered {response.status}"
        expect(page.get_by_role("main")).not_to_contain_text(re.compile("Initech|TPS report|globex"))

    # What a technician may open still works.
    for path in ("/tickets", f"/tickets/{desk.ticket.reference}", f"/mailboxes/{m}", f"/clients/{c}", "/account"):
        assert page.goto(live_server + path).status == 200, path
        assert page_problems(page, path, phone=False) == []
