"""The route sweep: every route of app.url_map, walked as each kind of hostile or careless visitor.

- anonymous: sent to sign-in (or 401/403), never a page;
- a technician: 403 on every admin route, and never 403 (nor 404) on a technician route; which is
  which is listed in TECHNICIAN_ROUTES and checked against the code's @admin_required;
- another MSP (its admin and its technician) with the first MSP's ids, or with its own ids but
  one of the first MSP's: 404 on every route that takes an id (403 first for a technician on an
  admin route), and nothing changes;
- a POST without a CSRF token: refused, and nothing changes;
- and nowhere a 500.

The routes come from app.url_map, not from a list here: a new route whose URL the sweep cannot
fill fails with "route X takes <arg>: add it to the sweep". To extend the sweep, add the argument
to ARGUMENTS (or ARGUMENTS_IN when one name means different things in different blueprints),
create the object in one_of_everything(), and list the rare exceptions in the small sets below.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from werkzeug.routing import Rule

from portal.app import PUBLIC_ENDPOINTS
from portal.auth.access import admin_required
from portal.extensions import csrf, db
from portal.outbound import servers, templates
from portal.services import canned, commit, custom_fields, sla, users
from tests.mailfactory import email

# --- what the sweep knows; extend here ------------------------------------------------------------

# Endpoints anyone may reach, each with the reason. Must be exactly the app's PUBLIC_ENDPOINTS.
PUBLIC = {
    "auth.sign_in": "the sign-in page itself",
    "main.healthz": "health for monitoring and load balancers; no tenant data",
    "main.metrics": "the operator's Prometheus figures behind TIDEMARK_METRICS_TOKEN (404 without it); mailbox ids only",
    "invitation.accept": "the signed link in the invitation is the key; the invited person has no session yet",
    "static": "the app's own CSS and JavaScript",
    "oauth_callback.callback": "a customer's global admin, who has no account, finishes a tenant consent here; "
                               "the state is the key, and every other purpose still needs its person signed in",
    "graph_notifications.notifications": "Microsoft Graph posts change notifications here; each item proves itself "
                                         "by its subscription's clientState, and only asks for a fetch",
    "graph_notifications.lifecycle": "Microsoft Graph posts lifecycle events here, with the same clientState proof",
}
# Blueprints without CSRF: who posts there has no form token. Each answers 202 and changes no row.
CSRF_EXEMPT = {"graph_notifications": "Microsoft Graph's calls (portal.graph_notifications)"}
# Not walked at all (files of the app, not of a tenant).
SKIPPED = {"static"}

# What a technician may use: everything else (not public) is for admins only, and a technician
# must get 403 there. A new route open to technicians fails the sweep until it is listed here.
TECHNICIAN_ROUTES = {
    "main.dashboard", "auth.sign_out", "account.index", "account.save_profile", "account.change_password",
    "account.sign_out_everywhere",
    # configuration, read only
    "clients.tree", "clients.detail", "clients.history", "email_templates.index",
    "clients.service_report", "clients.service_report_csv",
    "mailboxes.index", "mailboxes.detail", "mailboxes.history",
    # the work: tickets and unprocessed mail
    "tickets.index", "tickets.export", "tickets.detail", "tickets.history", "tickets.changes", "tickets.source", "tickets.attachment",
    "tickets.canned_body", "tickets.reply", "tickets.note", "tickets.fields", "tickets.custom_fields", "tickets.bulk",
    "tickets.assign_to_me", "tickets.events", "tickets.list_events", "tickets.part", "tickets.typing",
    "tickets.merge_form", "tickets.merge", "tickets.unmerge", "tickets.split_form", "tickets.split",
    "tickets.bulk_merge", "tickets.merge_many", "tickets.sla_policy", "tickets.send_again",
    "unprocessed.index", "unprocessed.detail", "unprocessed.source", "unprocessed.check", "unprocessed.assign",
    "unprocessed.append", "unprocessed.rerun", "unprocessed.discard", "unprocessed.restore",
    # Fetch now does what the schedule does anyway; technicians may ask for it and watch it.
    "mailboxes.fetch", "mailboxes.fetch_state",
}
# Admin-only routes whose check is inside the view rather than @admin_required (which the sweep
# reads from the code, to check it against TECHNICIAN_ROUTES).
ADMIN_INSIDE_VIEW = {
    "settings.mail": "the page is @admin_required; saving the installation-wide settings: the operators only (may_change_installation)",
    "settings.test_gateway": "a test email through the installation's default gateway: the same check as settings.mail",
    "settings.check_gateway": "signing in to the installation's default gateway: the same check as settings.mail",
}

# Routes that end the session: walked last in a signed-in pass.
SIGNS_OUT = {"auth.sign_out", "account.sign_out_everywhere"}

# URL argument -> the value naming an MSP's object (as one_of_everything() below makes them).
ARGUMENTS = {
    "client_id": lambda a: a.client.id,
    "event": lambda a: "ticket_created",
    "response_id": lambda a: a.canned.id,
    "mailbox_id": lambda a: a.mailbox.id,
    "route_id": lambda a: a.route.id,
    "reference": lambda a: a.ticket.reference,
    "message_id": lambda a: a.message.id,
    "attachment_id": lambda a: a.attachment.id,
    "user_id": lambda a: a.tech.id,
    "token": lambda a: a.invitation_token,
    "field_id": lambda a: a.custom_field.id,
    "policy_id": lambda a: a.policy.id,
}
# (blueprint, argument) -> value, where a name means another object in that blueprint.
ARGUMENTS_IN = {
    ("unprocessed", "message_id"): lambda a: a.unprocessed.id,
    ("tickets", "name"): lambda a: "conversation",  # a part of the ticket page drawn again
}

IGNORED_METHODS = {"HEAD", "OPTIONS"}
SIGN_IN = "/sign-in"


# --- the world: MSPs Alpha and Beta, each with one of everything a URL names -------------------------


def one_of_everything(app, world, name: str) -> SimpleNamespace:
    """An MSP with one object for each URL argument, its admin and its technician. Its reference
    prefix is its name, so no ticket reference of one MSP is also one of the other's."""
    slug = name.lower()
    msp = world.msp(f"{name} MSP", reference_prefix=name.upper())
    client = world.client(msp, "Contoso", allow=["contoso.com"])
    admin = world.user(msp, email=f"ann@{slug}.example", role="admin")
    tech = world.user(msp, email=f"tom@{slug}.example", role="technician")
    box = world.mailbox(msp, address=f"desk@{slug}.example", acknowledge=False, routes=[
        {"name": "Contoso", "client": client, "recipients": ["*"], "senders": ["contoso.com"], "acknowledge": False},
        {"name": "Everything else", "client": msp, "fallback": True, "acknowledge": False}])
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    servers.save_outgoing_server(box, {"host": f"smtp.{slug}.example", "port": 587, "security": "starttls",
                                       "timeout": 30, "verify_tls": True}, keys=keys, actor=admin)
    templates.save_template(client, "ticket_created", "We have your request {{ ticket.reference }}\nHello.\n", "",
                            False, admin)
    response = canned.save(client, name="Restart", text="Turn it off and on again.", shared=True, actor=admin)
    invited = users.invite_user(msp, f"new@{slug}.example", "New Person", "technician", admin)
    custom_field = custom_fields.save_field(msp, custom_fields.FieldInput(f"{name} asset", "text"), actor=admin)
    policy = sla.save_policy(msp.id, {"name": "Gold", "timezone": "Europe/Berlin",
                                      "business_hours": {"mon": [["08:00", "17:00"]]},
                                      "targets": {"high": {"response": 60, "resolution": 480}}}, admin)
    sla.choose(client, policy, admin, msp.id)
    commit()
    placed = world.deliver(box, email(sender="alice@contoso.com", to=[box.address], subject="Printer",
                                      attachments=[("notes.txt", "text/plain", b"toner everywhere")]))
    waiting = world.deliver(box, email(sender="it@newcustomer.example", to=["someone@elsewhere.example"]))
    assert placed.ticket is not None and waiting.ticket is None
    return SimpleNamespace(
        msp=msp, client=client, admin=admin, tech=tech, mailbox=box, route=box.routes[0], canned=response, policy=policy,
        ticket=placed.ticket, message=placed.message, attachment=placed.message.attachments[0],
        unprocessed=waiting.message, custom_field=custom_field, invitation_token=users.invitation_token(invited, app.config["SECRET_KEY"]),
    )


@pytest.fixture
def alpha(app, world):
    alpha = one_of_everything(app, world, "Alpha")
    # With several MSPs the installation-wide settings are the operators': Alpha's admin is one.
    app.config["TIDEMARK_OPERATORS"] = [alpha.admin.email]
    # The live streams answer, then end at once instead of after minutes.
    app.config["TIDEMARK_LIVE_STREAM_SECONDS"] = 0
    return alpha


@pytest.fixture
def beta(app, world, alpha):
    return one_of_everything(app, world, "Beta")


# --- the routes -----------------------------------------------------------------------------------

_ADMIN_CHECK = admin_required(lambda: None).__code__


def _uses_admin_required(view) -> bool:
    while view is not None:
        if getattr(view, "__code__", None) is _ADMIN_CHECK:
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def admin_only_in_code(app, endpoint: str) -> bool:
    return _uses_admin_required(app.view_functions[endpoint]) or endpoint in ADMIN_INSIDE_VIEW


@dataclass
class Request:
    rule: Rule
    method: str
    url: str

    @property
    def endpoint(self) -> str:
        return self.rule.endpoint

    @property
    def takes_id(self) -> bool:
        return bool(self.rule.arguments)

    @property
    def public(self) -> bool:
        return self.endpoint in PUBLIC

    @property
    def admin_only(self) -> bool:
        return not self.public and self.endpoint not in TECHNICIAN_ROUTES

    def __str__(self) -> str:
        return f"{self.method} {self.url} ({self.endpoint})"


def unknown_arguments(app) -> list[str]:
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED:
            continue
        blueprint = rule.endpoint.rpartition(".")[0]
        for arg in sorted(rule.arguments):
            if (blueprint, arg) not in ARGUMENTS_IN and arg not in ARGUMENTS:
                missing.append(f"route {rule.rule} ({rule.endpoint}) takes <{arg}>: add it to the sweep "
                               f"(ARGUMENTS in {__name__})")
    return missing


def values_of(rule: Rule, owner) -> dict:
    """The URL arguments of this rule filled with the owner's objects."""
    blueprint = rule.endpoint.rpartition(".")[0]
    return {arg: ARGUMENTS_IN.get((blueprint, arg), ARGUMENTS.get(arg))(owner) for arg in rule.arguments}


def url(rule: Rule, values: dict) -> str:
    return rule.build(values, append_unknown=False)[1]


def sweep(app, owner) -> list[Request]:
    """Every rule and method of the url_map with the owner's ids filled in; sign-out routes last."""
    missing = unknown_arguments(app)
    if missing:
        pytest.fail("\n".join(missing))
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED:
            continue
        for method in sorted(rule.methods - IGNORED_METHODS):
            found.append(Request(rule, method, url(rule, values_of(rule, owner))))
    found.sort(key=lambda r: r.endpoint in SIGNS_OUT)
    return found


def mixed(app, ours, theirs) -> list[Request]:
    """Each route with two ids or more, once for each id: all ours but that one, which is theirs."""
    found = []
    for req in sweep(app, ours):
        if req.public or len(req.rule.arguments) < 2:
            continue
        own, other = values_of(req.rule, ours), values_of(req.rule, theirs)
        for arg in sorted(a for a in own if own[a] != other[a]):  # not names like <event>, the same for all
            found.append(Request(req.rule, req.method, url(req.rule, {**own, arg: other[arg]})))
    return found


# --- sending and judging ----------------------------------------------------------------------------


class Walk:
    """Sends the sweep's requests and collects every problem (rather than stopping at the first)."""

    def __init__(self):
        self.problems: list[str] = []
        self.count = 0
        self.before: dict | None = None

    def watch(self) -> None:
        """From now on, unchanged() compares the database with this moment."""
        self.before = snapshot()

    def unchanged(self, req: Request, who: str) -> None:
        after = snapshot()
        changed = [name for name in self.before if self.before[name] != after[name]]
        if changed:
            self.problems.append(f"{req} as {who}: changed {', '.join(changed)}")
            self.before = after

    def send(self, browser, req: Request, *, token=True, htmx=False):
        headers = {"HX-Request": "true"} if htmx else {}
        data = None
        if req.method != "GET":
            # "yes" where a page asks first: its asking page is the same for every id, so the
            # action itself is what is swept.
            data = {"confirmed": "yes"}
            if token:
                if browser.token is None:
                    browser.get(SIGN_IN)
                data["csrf_token"] = browser.token
        browser._fresh_request()
        self.count += 1
        try:
            resp = browser.client.open(req.url, method=req.method, data=data, headers=headers)
        except Exception as exc:  # noqa: BLE001 - TESTING propagates what would be a 500
            self.problems.append(f"{req}: 500 ({exc!r})")
            db.session.rollback()
            return None
        if resp.status_code >= 500:
            self.problems.append(f"{req}: {resp.status_code}")
            return None
        return resp

    def expect(self, ok: bool, req: Request, who: str, wanted: str, resp) -> None:
        if not ok:
            where = resp.headers.get("Location") or resp.headers.get("HX-Redirect") or ""
            self.problems.append(f"{req} as {who}: wanted {wanted}, got {resp.status_code} {where}".rstrip())

    def signed_in_still(self, req: Request, who: str, resp) -> bool:
        if _to_sign_in(resp):
            self.problems.append(f"{req} as {who}: answered with the sign-in page; did a route before it end "
                                 f"the session? List such routes in SIGNS_OUT.")
            return False
        return True

    def finish(self, what: str) -> None:
        assert not self.problems, f"{what}: {len(self.problems)} of {self.count} requests wrong:\n" + "\n".join(
            self.problems)


def _to_sign_in(resp) -> bool:
    where = resp.headers.get("Location") if resp.status_code in (301, 302, 303) else resp.headers.get("HX-Redirect")
    return bool(where) and urlsplit(where).path == SIGN_IN


def snapshot() -> dict[str, list]:
    """Every row of every table, as committed."""
    with db.engine.connect() as conn:
        return {t.name: conn.execute(select(t).order_by(*t.primary_key.columns)).all()
                for t in db.metadata.sorted_tables}


def signed_in(make_browser, email_address):
    browser = make_browser()
    assert browser.sign_in(email_address).status_code == 302
    return browser


# --- the sweep ------------------------------------------------------------------------------------


def test_the_sweep_knows_every_route(app):
    assert set(PUBLIC) == PUBLIC_ENDPOINTS, (
        "the app's public endpoints and the sweep's PUBLIC list differ: give each public endpoint its reason here")
    assert SKIPPED <= set(PUBLIC)
    assert set(CSRF_EXEMPT) == {getattr(b, "name", b) for b in csrf._exempt_blueprints} and not csrf._exempt_views
    assert not unknown_arguments(app), "\n".join(unknown_arguments(app))
    endpoints = set(app.view_functions)
    assert TECHNICIAN_ROUTES | set(ADMIN_INSIDE_VIEW) <= endpoints, "the sweep lists endpoints the app has not"
    # The code's admin checks and the sweep's list agree both ways.
    wrong = [f"{e} is open to technicians: list it in TECHNICIAN_ROUTES if it is meant for them, "
             f"else give it @admin_required" for e in sorted(endpoints - set(PUBLIC) - TECHNICIAN_ROUTES)
             if not admin_only_in_code(app, e)]
    wrong += [f"{e} is in TECHNICIAN_ROUTES but admin-only in the code" for e in sorted(TECHNICIAN_ROUTES)
              if admin_only_in_code(app, e)]
    assert not wrong, "\n".join(wrong)


def test_anonymous_visitors_are_sent_to_sign_in(app, alpha, make_browser):
    walk = Walk()
    walk.watch()
    for htmx in (False, True):
        anonymous = make_browser()
        who = "anonymous" + (" (htmx)" if htmx else "")
        for req in sweep(app, alpha):
            resp = walk.send(anonymous, req, htmx=htmx)  # with the session's CSRF token: sign-in answers
            if req.method != "GET":
                walk.unchanged(req, who)
            if resp is None or req.public:
                continue
            # htmx requests get an empty 200 with HX-Redirect: the browser then loads sign-in.
            to_sign_in = _to_sign_in(resp) and (resp.status_code != 200 or not resp.data)
            refused = resp.status_code in (401, 403) or to_sign_in
            walk.expect(refused, req, who, "sign-in, 401 or 403", resp)
    walk.finish("anonymous")


def test_a_technician_gets_403_on_every_admin_route_and_only_there(app, alpha, make_browser):
    walk = Walk()
    tech = signed_in(make_browser, alpha.tech.email)
    for req in sweep(app, alpha):
        if req.public or (resp := walk.send(tech, req)) is None:
            continue
        if req.endpoint not in SIGNS_OUT and not walk.signed_in_still(req, "Alpha's technician", resp):
            continue
        if req.admin_only:
            walk.expect(resp.status_code == 403, req, "Alpha's technician", "403 (admin route)", resp)
        else:
            walk.expect(resp.status_code not in (403, 404), req, "Alpha's technician",
                        "the route (it is in TECHNICIAN_ROUTES)", resp)
    walk.finish("technician")


def test_another_msp_gets_404_for_every_id_and_changes_nothing(app, alpha, beta, make_browser):
    walk = Walk()
    # The baseline that makes each 404 mean something: with its own ids each MSP's admin opens every page.
    for owner in (alpha, beta):
        admin = signed_in(make_browser, owner.admin.email)
        for req in sweep(app, owner):
            if req.method == "GET" and req.takes_id and (resp := walk.send(admin, req)) is not None:
                walk.expect(resp.status_code < 400, req, owner.admin.email, "the page (is the sweep's id right?)", resp)
    # Beta with Alpha's ids, then with its own ids but one of Alpha's.
    requests = [req for req in sweep(app, alpha) if req.takes_id and not req.public] + mixed(app, beta, alpha)
    for user in (beta.admin, beta.tech):
        who = f"Beta's {user.role}"
        other = signed_in(make_browser, user.email)
        walk.watch()  # after signing in, which notes the time of it
        for req in requests:
            resp = walk.send(other, req)
            if req.method != "GET":
                walk.unchanged(req, who)
            if resp is None:
                continue
            walk.signed_in_still(req, who, resp)
            wanted = 403 if req.admin_only and not user.is_admin else 404
            walk.expect(resp.status_code == wanted, req, who, str(wanted), resp)
    walk.finish("Alpha's ids")


def test_a_post_without_csrf_token_is_refused_and_changes_nothing(app, alpha, make_browser):
    walk = Walk()
    admin = signed_in(make_browser, alpha.admin.email)
    walk.watch()
    for htmx in (False, True):
        for req in sweep(app, alpha):
            if req.method == "GET":
                continue
            who = "Alpha's admin without a CSRF token" + (" (htmx)" if htmx else "")
            resp = walk.send(admin, req, token=False, htmx=htmx)
            walk.unchanged(req, who)
            if resp is None:
                continue
            if req.endpoint.partition(".")[0] in CSRF_EXEMPT:
                walk.expect(resp.status_code == 202, req, who, "202 and nothing done", resp)
                continue
            with admin.client.session_transaction() as session:
                flashes = session.pop("_flashes", [])
            if htmx:
                refused = resp.status_code == 400 and resp.headers.get("HX-Refresh") == "true"
            else:
                refused = resp.status_code == 302 and any("out of date" in message for _c, message in flashes)
            walk.expect(refused, req, who, "the CSRF refusal", resp)
    walk.finish("without a CSRF token")
