"""A mailbox's routes: which mail each takes and what it becomes, checked and kept in the one
order the pipeline tries them (exact, then wildcard, then the fallback); edited one at a time
from the browser, each change in the mailbox's history. Flush, never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import select, update

from portal.extensions import db
from portal.mail.alerts import AlertRuleError, clean_alert_rule
from portal.models import Client, Mailbox, Route, User
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.outbound.variants import check_variant_name
from portal.services import ValidationError, audit
from portal.mail.extract import check_rule, rule_of
from portal.services.allowlist import AllowEntryError, normalise_address, normalise_domain
from portal.services.custom_fields import targets_of, type_problem


@dataclass
class RouteInput:
    name: str
    client: Client
    recipients: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    subject_keywords: list[str] = field(default_factory=list)
    attachment_types: list[str] = field(default_factory=list)
    high_importance_only: bool = False
    fallback: bool = False
    enabled: bool = True
    acknowledge: bool = True
    acknowledge_cc: bool = False
    default_status: str | None = None
    default_priority: str | None = None
    default_type: str | None = None
    test_mode: bool = False
    acknowledgement_variant: str | None = None  # None: the mailbox's choice, else the standard one
    # [{"source", "pattern", "target"}] (portal.mail.extract); checked by clean_routes.
    extraction_rules: list[dict] = field(default_factory=list)
    # portal.mail.alerts: how it reads a problem key and state from monitoring mail; None: none.
    alert_rule: dict | None = None


def checked_address(value: str, label: str, errors: dict) -> str | None:
    """The address normalised, or None with the reason added to errors[label]."""
    try:
        return normalise_address(value)
    except AllowEntryError as exc:
        errors.setdefault(label, []).append(str(exc))
        return None


def checked_sender_pattern(value: str, errors: dict, where: str) -> str | None:
    """A sender pattern (*, *@domain, an address or a domain) normalised, or None with the reason
    added to errors["routes"]."""
    text = value.strip().lower()
    if text == "*":
        return text
    try:
        if text.startswith("*@"):
            return "*@" + normalise_domain(text[2:])
        if "@" in text.lstrip("@"):
            return normalise_address(text)
        return normalise_domain(text)
    except AllowEntryError as exc:
        errors.setdefault("routes", []).append(f"{where}, sender: {exc}")
        return None


def clean_routes(routes: list[RouteInput], msp_id: int) -> list[RouteInput]:
    """Validated and in the one order the pipeline uses: exact, then wildcard, then fallback.
    The ValidationError also carries `route_errors`: (index in `routes` or None, field, message),
    so that a form can put each message next to its field."""
    errors: dict[str, list[str]] = {}
    located: list[tuple[int | None, str, str]] = []

    def fail(index: int | None, name: str, message: str) -> None:
        errors.setdefault("routes", []).append(message)
        located.append((index, name, message))

    def collect(index: int, name: str, call):
        # The address helpers report under "routes"; note which route and field they were about.
        seen = len(errors.get("routes", []))
        result = call()
        located.extend((index, name, m) for m in errors.get("routes", [])[seen:])
        return result

    targets = targets_of(msp_id) if any(r.extraction_rules or r.default_type for r in routes) else None
    fallbacks = [r for r in routes if r.fallback]
    if routes and len(fallbacks) != 1:
        fail(None, "fallback", "A mailbox with routes needs exactly one fallback route, for mail no other route takes.")
    for i, r in enumerate(routes, 1):
        where = f"route {i} ({r.name or 'unnamed'})"
        if not r.name.strip():
            fail(i - 1, "name", f"route {i}: give it a name.")
        if r.client.msp_id != msp_id:
            fail(i - 1, "client", f"{where}: its client is not in this MSP's tree.")
        variant_errors: dict[str, list[str]] = {}
        r.acknowledgement_variant = check_variant_name(r.acknowledgement_variant, r.client, "v", variant_errors)
        for message in variant_errors.get("v", []):
            fail(i - 1, "acknowledgement_variant", f"{where}: {message}")
        if r.default_type and (problem := type_problem(msp_id, r.default_type)):
            fail(i - 1, "default_type", f"{where}: {problem}")
        if r.extraction_rules:
            r.extraction_rules = _checked_rules(r.extraction_rules, targets, lambda m, i=i, where=where: fail(
                i - 1, "extraction_rules", f"{where}: {m}"))
        if r.fallback and r.test_mode:
            fail(i - 1, "test_mode", f"{where}: the fallback route cannot be in test: it takes the mail no other "
                                     "route takes, so there is no next route to decide instead.")
        _check_alert_rule(r, i - 1, where, fail)
        if r.fallback:
            continue
        if not r.recipients:
            fail(i - 1, "recipients", f"{where}: name the recipients it takes, or * with a sender list.")
        wildcard = "*" in r.recipients
        if wildcard and len(r.recipients) > 1:
            fail(i - 1, "recipients", f"{where}: * stands alone in the recipient list.")
        if wildcard and not r.senders:
            fail(i - 1, "senders", f"{where}: a wildcard route needs a sender list, or it would take all mail.")
        if wildcard and "*" in [s.strip() for s in r.senders]:
            fail(i - 1, "senders", f"{where}: a wildcard route cannot have a wildcard sender.")
        r.recipients = collect(i - 1, "recipients", lambda r=r: [
            x for x in ("*" if v.strip() == "*" else checked_address(v, "routes", errors) for v in r.recipients) if x])
        r.senders = collect(i - 1, "senders", lambda r=r, where=where: [
            x for x in (checked_sender_pattern(v, errors, where) for v in r.senders) if x])
        for value, allowed, label in ((r.default_status, TICKET_STATUSES[:3], "status"),
                                      (r.default_priority, PRIORITIES, "priority")):
            if value is not None and value not in allowed:
                fail(i - 1, f"default_{label}", f"{where}: {label} is one of {', '.join(allowed)}.")
    if errors:
        exc = ValidationError(errors)
        exc.route_errors = located
        raise exc
    rank = lambda r: 2 if r.fallback else (1 if "*" in r.recipients else 0)  # noqa: E731
    return sorted(routes, key=rank)


EXTRACTION_RULES_MAX = 20


def _checked_rules(items, targets, fail) -> list[dict]:
    """A route's extraction rules as stored; each problem is passed to fail()."""
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        fail("extraction rules are a list of source, pattern and target.")
        return []
    if len(items) > EXTRACTION_RULES_MAX:
        fail(f"at most {EXTRACTION_RULES_MAX} extraction rules.")
    rules = [rule_of(x) for x in items]
    for n, rule in enumerate(rules, 1):
        for _part, message in check_rule(rule, targets):
            fail(f"extraction rule {n}: {message}")
    return [r.as_dict() for r in rules]


def _check_alert_rule(route: RouteInput, index: int, where: str, fail) -> None:
    """The route's alert rule in its stored form; each problem reported next to its field."""
    try:
        route.alert_rule = clean_alert_rule(route.alert_rule)
    except AlertRuleError as exc:
        for name, messages in exc.errors.items():
            for message in messages:
                fail(index, name, f"{where}: alert rule: {message}")


# --- editing from the browser: one route at a time -----------------------------------------------

ROUTE_FIELDS = ("recipients", "senders", "subject_keywords", "attachment_types", "high_importance_only",
                "fallback", "enabled", "acknowledge", "acknowledge_cc", "default_status", "default_priority",
                "default_type", "test_mode", "acknowledgement_variant", "extraction_rules", "alert_rule")
_ROUTE_PREFIX = re.compile(r"^route \d+(?: \(.*?\))?: ")


def get_route(mailbox: Mailbox, route_id: int) -> Route | None:
    return next((r for r in mailbox.routes if r.id == route_id), None)


def route_input_of(route: Route) -> RouteInput:
    return RouteInput(name=route.name, client=route.client,
                      **{k: (list(v) if isinstance(v := getattr(route, k), list) else v) for k in ROUTE_FIELDS})


def _route_snapshot(route: Route | RouteInput) -> dict:
    snap = {"name": route.name, "client": route.client.name, **{k: getattr(route, k) for k in ROUTE_FIELDS}}
    # Unset conditions say nothing in the history of an added or removed route.
    return {k: v for k, v in snap.items() if v not in (None, [], "")}


def _route_order(mailbox: Mailbox) -> list[str]:
    return [r.name for r in sorted(mailbox.routes, key=lambda r: r.position)]


def fallback_switched_off(routes) -> bool:
    """Routes (rows or inputs) whose fallback is switched off: mail no other route takes would be
    left unprocessed, so an active mailbox may not have them."""
    return bool(routes) and not any(r.fallback and r.enabled for r in routes)


def _write_routes(mailbox: Mailbox, planned: list[tuple[Route | None, RouteInput]],
                  focus: int | None = None) -> dict[int, Route]:
    """Check the whole list with clean_routes, then update the rows in place (their ids stay).
    `focus` is the index in `planned` whose messages belong next to the fields of its form."""
    try:
        ordered = clean_routes([data for _, data in planned], mailbox.msp_id)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for index, name, message in getattr(exc, "route_errors", []):
            if index is not None and index == focus:
                text = _ROUTE_PREFIX.sub("", message)
                errors.setdefault(name, []).append(text[:1].upper() + text[1:])
            elif name == "fallback" and index is None and focus is not None:
                errors.setdefault("fallback", []).append(message)
            else:
                errors.setdefault("", []).append(message)
        raise ValidationError(errors) from None
    if mailbox.status == "active" and fallback_switched_off(ordered):
        fallback_is_focus = focus is not None and planned[focus][1].fallback
        raise ValidationError({"enabled" if fallback_is_focus else "": [
            "The mailbox is active, so its fallback route must stay switched on: mail no other route "
            "takes would be left unprocessed. Disable the mailbox first to switch it off."]})
    row_of = {id(data): row for row, data in planned}
    kept: dict[int, Route] = {}
    for position, data in enumerate(ordered):
        row = row_of[id(data)]
        if row is None:
            row = Route(name=data.name.strip(), client_id=data.client.id)
            mailbox.routes.append(row)
        row.name, row.client_id, row.client, row.position = data.name.strip(), data.client.id, data.client, position
        for key in ROUTE_FIELDS:
            setattr(row, key, getattr(data, key))
        kept[id(data)] = row
    for row in list(mailbox.routes):
        if row not in kept.values():
            mailbox.routes.remove(row)
    mailbox.routes.sort(key=lambda r: r.position)
    db.session.flush()
    return kept


def save_route(mailbox: Mailbox, data: RouteInput, *, actor: User | None, route: Route | None = None) -> Route:
    """Add (route None) or change one route. Marking it the fallback takes that flag from the
    route that had it, since a mailbox has exactly one."""
    planned: list[tuple[Route | None, RouteInput]] = []
    for row in mailbox.routes:
        current = data if row is route else route_input_of(row)
        if row is not route and data.fallback and current.fallback:
            current.fallback = False
        planned.append((row, current))
    if route is None:
        planned.append((None, data))
    focus = next(i for i, (_, d) in enumerate(planned) if d is data)
    before = _route_snapshot(route) if route is not None else {}
    saved = _write_routes(mailbox, planned, focus)[id(data)]
    changes = audit.diff(before, _route_snapshot(saved))
    if changes:
        action = f"route {saved.name} {'changed' if route is not None else 'added'}"
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, action, changes)
    return saved


def delete_route(mailbox: Mailbox, route: Route, *, actor: User | None) -> None:
    planned = [(row, route_input_of(row)) for row in mailbox.routes if row is not route]
    before = _route_snapshot(route)
    _write_routes(mailbox, planned)
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"route {route.name} removed",
                 audit.diff(before, {}))


def reorder_routes(mailbox: Mailbox, route_ids: list[int], *, actor: User | None) -> bool:
    """Put the routes in the given order. The pipeline always tries exact routes, then wildcard
    routes, then the fallback, so an order across those groups is corrected; returns False then."""
    rows = {r.id: r for r in mailbox.routes}
    if sorted(route_ids) != sorted(rows):
        raise ValidationError({"": ["The list of routes changed meanwhile; reload the page and try again."]})
    before = _route_order(mailbox)
    _write_routes(mailbox, [(rows[i], route_input_of(rows[i])) for i in route_ids])
    after = _route_order(mailbox)
    if after != before:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "routes reordered", {"order": [before, after]})
    return [r.id for r in mailbox.routes] == list(route_ids)


def make_live(mailbox: Mailbox, route: Route, *, actor: User | None) -> Route:
    """Take a route out of test: from now on it applies when it matches. Its count stays as it was."""
    data = route_input_of(route)
    data.test_mode = False
    return save_route(mailbox, data, actor=actor, route=route)


def reset_test_count(mailbox: Mailbox, route: Route, *, actor: User | None) -> None:
    """Start a route's test count again from zero (the ingest adds to it in SQL, never through the row)."""
    before = db.session.scalar(select(Route.test_hits).where(Route.id == route.id)) or 0
    db.session.execute(update(Route).where(Route.id == route.id, Route.mailbox_id == mailbox.id)
                       .values(test_hits=0).execution_options(synchronize_session=False))
    db.session.expire(route, ["test_hits"])
    if before:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"route {route.name} test count reset",
                     {"test count": [before, 0]})


def route_group(route: Route) -> int:
    """0 exact, 1 wildcard, 2 fallback: routes move only within their group."""
    return 2 if route.fallback else (1 if route.wildcard else 0)


def move_route(mailbox: Mailbox, route: Route, step: int, *, actor: User | None) -> bool:
    """One place up (step -1) or down (+1) within its group; False when it is already at the edge."""
    ids = [r.id for r in mailbox.routes]
    i = ids.index(route.id)
    j = i + step
    if not 0 <= j < len(ids) or route_group(mailbox.routes[j]) != route_group(route):
        return False
    ids[i], ids[j] = ids[j], ids[i]
    return reorder_routes(mailbox, ids, actor=actor)


NO_ROUTES_FOR_BCC = ("This mailbox has no routes: it decides by the allow-lists, which cannot place BCC'd mail. "
                     "A wildcard route needs the mailbox's other routes and a fallback route; set them up on the "
                     "mailbox's page.")


def add_bcc_route(mailbox: Mailbox, client: Client, sender: str, *, actor: User | None) -> tuple[Route, bool]:
    """The fix for BCC'd mail from a sender (an address or a domain): a wildcard route taking its
    mail to `client`, tried after the exact routes and before the fallback. (route, added): a
    wildcard route already taking this sender to this client is kept, not doubled."""
    if client.msp_id != mailbox.msp_id:
        raise ValidationError({"client_id": ["Choose one of your clients."]})
    if not mailbox.routes:
        raise ValidationError({"": [NO_ROUTES_FOR_BCC]})
    errors: dict[str, list[str]] = {}
    pattern = checked_sender_pattern(sender, errors, "wildcard route")
    if pattern is None or pattern == "*":
        raise ValidationError({"scope": errors.get("routes") or ["A wildcard route needs a sender or domain."]})
    for route in mailbox.routes:
        if route.wildcard and route.enabled and route.client_id == client.id and pattern in route.senders:
            return route, False
    names = {r.name for r in mailbox.routes}
    name = f"BCC from {pattern}"
    name = next(n for n in (name, *(f"{name} ({i})" for i in range(2, 100))) if n not in names)
    data = RouteInput(name=name, client=client, recipients=["*"], senders=[pattern])
    return save_route(mailbox, data, actor=actor), True
