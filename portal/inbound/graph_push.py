"""Push for Microsoft Graph mailboxes: change-notification subscriptions, one per folder read.

When the portal has a public https address (TIDEMARK_PORTAL_URL), each active Graph mailbox asks
Graph to tell our notification endpoint (portal.graph_notifications) of every message created in
the folders it reads. A notification only asks for the mailbox's usual fetch (the same job as the
scheduler's, one at a time): its content is never trusted or used, and a forged one costs a delta
round that finds nothing. The subscriptions are kept here (created, renewed before they expire,
deleted when the mailbox stops reading them); workers.graph_push runs this on a schedule and when
a mailbox changes. The scheduler's side (a pushed mailbox is polled at its safety interval) is in
portal.inbound.health.

Every notification carries the subscription's clientState, a secret we chose and keep encrypted:
one that does not match is refused, and nothing is done for a subscription we do not know.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.inbound.push import ask_for_fetch_soon
from portal.jobs import enqueue_now
from portal.models import GraphSubscription, Mailbox
from portal.models.base import utcnow
from portal.services.mailboxes import graph_settings, server_reach
from portal.transport.base import TransportError
from portal.transport.graph import GraphSession

log = logging.getLogger(__name__)

NOTIFICATION_PATH = "/graph/notifications"
LIFECYCLE_PATH = "/graph/lifecycle"
# Asked for at creation and renewal: within Graph's limit for mail (4230 minutes when lifecycle
# notifications were introduced; Microsoft allows longer today, so this is safe either way).
LIFETIME = timedelta(minutes=4230)
# Renewed when less than this is left: the renewal job runs every RENEW_EVERY, so a day leaves
# many tries for a Graph that is briefly away.
RENEW_BEFORE = timedelta(hours=24)
RENEW_EVERY = 15 * 60  # seconds
LIFECYCLE_EVENTS = ("reauthorizationRequired", "missed", "subscriptionRemoved")
NO_PUBLIC_ADDRESS = "the portal has no public https address (TIDEMARK_PORTAL_URL)"
SUBSCRIBING = "subscribing to Graph notifications"


def push_base(portal_url: str | None) -> str | None:
    """The portal's address Graph can call back, or None: Graph calls https addresses only."""
    parts = urlsplit((portal_url or "").strip())
    if parts.scheme != "https" or not parts.hostname:
        return None
    return f"https://{parts.netloc}{parts.path.rstrip('/')}"


def not_subscribed(mailbox: Mailbox, portal_url: str | None) -> str | None:
    """Why this mailbox has no subscriptions, in words for its page; None: it should have them."""
    if mailbox.protocol != "graph":
        return "only Microsoft Graph mailboxes subscribe"
    if mailbox.status != "active":
        return f"the mailbox is {mailbox.status}"
    if not mailbox.fetches:
        return "the mailbox is outgoing only"
    if push_base(portal_url) is None:
        return NO_PUBLIC_ADDRESS
    return None


def wanted_folders(mailbox: Mailbox, portal_url: str | None) -> list[str]:
    return [] if not_subscribed(mailbox, portal_url) else list(dict.fromkeys(mailbox.folders or ["inbox"]))


# --- keeping the subscriptions ---------------------------------------------------------------------


@dataclass
class KeepReport:
    created: int = 0
    renewed: int = 0
    deleted: int = 0
    failed: int = 0


def keep_subscriptions(mailbox: Mailbox, *, keys: str, portal_url: str | None, now: datetime | None = None,
                       event: str | None = None, subscription_id: str | None = None) -> KeepReport:
    """Bring the mailbox's subscriptions in line with what it reads: create the missing ones,
    renew those close to expiry, delete those no longer wanted. `event`: a lifecycle event Graph
    sent for `subscription_id` (reauthorizationRequired: reauthorize, else renew; subscriptionRemoved:
    create again). Flushes; the caller commits. Graph's refusals are kept on the rows, in words."""
    now = now or utcnow()
    report = KeepReport()
    wanted = wanted_folders(mailbox, portal_url)
    rows = {row.folder: row for row in mailbox.graph_subscriptions}
    stale = [row for folder, row in rows.items() if folder not in wanted]
    needs_graph = stale and any(r.subscription_id for r in stale) or any(
        _needs_work(rows.get(folder), now, event, subscription_id) for folder in wanted)
    if not needs_graph:
        for row in stale:
            db.session.delete(row)
        db.session.flush()
        return report
    try:
        session = GraphSession(graph_settings(mailbox, keys, reach=server_reach()))
    except (TransportError, ValueError) as exc:  # no token: the grant's own words
        words = getattr(exc, "message", str(exc))
        for row in stale:
            db.session.delete(row)  # Graph drops them at their expiry; notifications for them are ignored
        for folder in wanted:
            _note_problem(mailbox, rows.get(folder), folder, words, now)
            report.failed += 1
        db.session.flush()
        return report
    with session:
        for row in stale:
            if row.subscription_id:
                try:
                    session.unsubscribe(row.subscription_id)
                except TransportError as exc:
                    log.warning("%s: could not delete the Graph subscription of %s (%s); it expires by itself",
                                mailbox.address, row.folder, exc.message)
            db.session.delete(row)
            report.deleted += 1
        base = push_base(portal_url)
        for folder in wanted:
            _keep_one(mailbox, session, rows.get(folder), folder, base, keys, now, event, subscription_id, report)
    db.session.flush()
    return report


def _needs_work(row: GraphSubscription | None, now: datetime, event: str | None, subscription_id: str | None) -> bool:
    if row is None or not row.subscription_id or row.expires_at is None:
        return True
    if event and row.subscription_id == subscription_id:
        return True
    return row.expires_at - now < RENEW_BEFORE


def _keep_one(mailbox, session, row, folder, base, keys, now, event, subscription_id, report) -> None:
    if not _needs_work(row, now, event, subscription_id):
        return
    mine = event if row is not None and row.subscription_id == subscription_id else None
    try:
        if row is not None and row.subscription_id and row.expires_at and row.expires_at > now \
                and mine != "subscriptionRemoved":
            if mine == "reauthorizationRequired":
                session.reauthorize(row.subscription_id)
            renewed = session.renew(row.subscription_id, now + LIFETIME)
            if renewed is not None:
                row.expires_at, row.problem, row.changed_at = renewed.expires, None, now
                report.renewed += 1
                return
            log.info("%s %s: Graph no longer knows the subscription; subscribing again", mailbox.address, folder)
        _subscribe(mailbox, session, row, folder, base, keys, now)
        report.created += 1
    except TransportError as exc:
        log.warning("%s %s: Graph subscription not kept: %s", mailbox.address, folder, exc.message)
        _note_problem(mailbox, row, folder, exc.message, now)
        report.failed += 1


def _subscribe(mailbox, session, row, folder, base, keys, now) -> None:
    if row is not None and row.subscription_id:
        try:
            session.unsubscribe(row.subscription_id)  # never two subscriptions for one folder
        except TransportError:
            pass  # it expires by itself; notifications for it find no row
    client_state = secrets.token_urlsafe(32)  # Graph allows 128 characters
    made = session.subscribe(folder, notification_url=base + NOTIFICATION_PATH, lifecycle_url=base + LIFECYCLE_PATH,
                             client_state=client_state, expires=now + LIFETIME)
    if row is None:
        row = GraphSubscription(mailbox_id=mailbox.id, folder=folder)
        db.session.add(row)
    row.subscription_id, row.expires_at = made.id, made.expires
    row.client_state_encrypted = crypto.encrypt(keys, client_state)
    row.problem, row.changed_at = None, now


def _note_problem(mailbox, row, folder, words: str, now: datetime) -> None:
    if row is None:
        row = GraphSubscription(mailbox_id=mailbox.id, folder=folder)
        db.session.add(row)
    if row.expires_at is not None and row.expires_at <= now:
        row.subscription_id = row.expires_at = row.client_state_encrypted = None
    row.problem, row.changed_at = words, now


def forget_subscriptions(mailbox: Mailbox, keys: str) -> None:
    """Delete the mailbox's subscriptions at Graph before the mailbox goes (best effort: one Graph
    does not delete expires by itself, and its notifications find no row)."""
    live = [row.subscription_id for row in mailbox.graph_subscriptions if row.subscription_id]
    if not live or mailbox.protocol != "graph":
        return
    try:
        with GraphSession(graph_settings(mailbox, keys, reach=server_reach())) as session:
            for subscription_id in live:
                session.unsubscribe(subscription_id)
    except (TransportError, ValueError) as exc:
        log.warning("%s: could not delete its Graph subscriptions (%s); they expire by themselves",
                    mailbox.address, getattr(exc, "message", exc))


def mailboxes_to_keep() -> list[int]:
    """Every mailbox that has subscriptions or should have them, by id."""
    with_rows = select(GraphSubscription.mailbox_id)
    graph = select(Mailbox.id).where(Mailbox.protocol == "graph", Mailbox.status == "active",
                                     Mailbox.direction != "outgoing")
    return sorted(set(db.session.scalars(with_rows)) | set(db.session.scalars(graph)))


# --- notifications ---------------------------------------------------------------------------------


@dataclass
class Taken:
    """What a notification request led to (for the log and the tests; Graph hears only 202)."""

    fetches: set[int]
    lifecycle: list[tuple[int, str, str]]  # (mailbox id, event, subscription id)
    refused: int = 0
    unknown: int = 0


def take_notifications(body: bytes, keys: str) -> Taken:
    """Check each item of a notification (or lifecycle) request and ask for what it calls for.
    Nothing of an item is used but its subscription id, its clientState and its lifecycle event."""
    taken = Taken(set(), [])
    try:
        items = json.loads(body).get("value")
    except (ValueError, AttributeError):
        items = None
    if not isinstance(items, list):
        return taken
    items = [i for i in items[:100] if isinstance(i, dict) and isinstance(i.get("subscriptionId"), str)]
    ids = {i["subscriptionId"][:255] for i in items}
    rows = {r.subscription_id: r for r in db.session.scalars(
        select(GraphSubscription).where(GraphSubscription.subscription_id.in_(ids)))} if ids else {}
    for item in items:
        row = rows.get(item["subscriptionId"][:255])
        if row is None or row.client_state_encrypted is None:
            taken.unknown += 1
            continue
        given = item.get("clientState")
        try:
            expected = crypto.decrypt(keys, row.client_state_encrypted)
        except crypto.SecretError:  # a key dropped before `flask secrets rotate`: renewal cannot fix it either
            log.warning("the clientState of mailbox %s (%s) cannot be decrypted with the configured keys",
                        row.mailbox_id, row.folder)
            expected = None
        if not isinstance(given, str) or expected is None \
                or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("a Graph notification for mailbox %s (%s) was refused: its clientState does not match",
                        row.mailbox_id, row.folder)
            taken.refused += 1
            continue
        event = item.get("lifecycleEvent")
        if event in LIFECYCLE_EVENTS:
            taken.lifecycle.append((row.mailbox_id, event, row.subscription_id))
            if event != "reauthorizationRequired":
                taken.fetches.add(row.mailbox_id)  # missed, or removed: mail may have come meanwhile
        elif event is None:
            taken.fetches.add(row.mailbox_id)
    taken.fetches -= cooling_off(taken.fetches, utcnow())
    return taken


def cooling_off(mailbox_ids: set[int], now: datetime) -> set[int]:
    """Those of these mailboxes resting after failed polls: a notification does not cut their cool-off short."""
    if not mailbox_ids:
        return set()
    return set(db.session.scalars(select(Mailbox.id).where(
        Mailbox.id.in_(mailbox_ids), Mailbox.streak_alerted.is_(True), Mailbox.next_poll_at > now)))


def act_on(taken: Taken) -> None:
    """Ask for the fetches and the lifecycle work at once, on Redis (nothing is written here)."""
    for mailbox_id in sorted(taken.fetches):
        ask_for_fetch_soon(mailbox_id)
    for mailbox_id, event, subscription_id in taken.lifecycle:
        enqueue_now("workers.graph_push.keep_mailbox_subscriptions", mailbox_id, event, subscription_id,
                    options={"result_ttl": 0, "failure_ttl": 3600, "job_timeout": 600})


# --- what the mailbox page says ----------------------------------------------------------------------


def live_folders(mailbox_ids: list[int], now: datetime) -> tuple[dict[int, dict[str, datetime]], dict[int, str]]:
    """Per mailbox: its folders with a live subscription (and their expiry), and the last problem."""
    live: dict[int, dict[str, datetime]] = {}
    problems: dict[int, str] = {}
    if not mailbox_ids:
        return live, problems
    for row in db.session.scalars(select(GraphSubscription).where(GraphSubscription.mailbox_id.in_(mailbox_ids))):
        if row.subscription_id and row.expires_at and row.expires_at > now:
            live.setdefault(row.mailbox_id, {})[row.folder] = row.expires_at
        if row.problem:
            problems[row.mailbox_id] = row.problem
    return live, problems
