"""Which client new mail belongs to (DESIGN step 8). Pure: the caller passes plain values.

With routes: exact routes (a recipient they name is on the mail) → wildcard routes (`*`
recipient, sender list required: these catch BCC) → the fallback route. Mail sent only to an
alias that no route names, or only BCC'd without a matching wildcard route, is unprocessed.

A route in test is tried like the others, but when it matches, what it would have done goes into
the trace (and `tested`, for the caller to count) and the next route decides, as if it had not
matched: it changes nothing, not even which aliases count as named by a route.

Without routes: a sender address on an allow-list → a sender domain on an allow-list → a known
contact → the mailbox's own client (catch-all). BCC'd mail is unprocessed there too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from portal.mail.allowlist import allow_list_match

# How a reason for BCC'd mail starts: the pages recognise it and offer the wildcard route.
BCC_CAUSE = "only BCC'd to this mailbox"


@dataclass(frozen=True)
class RouteRule:
    id: int
    name: str
    client_id: int
    recipients: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    subject_keywords: tuple[str, ...] = ()
    attachment_types: tuple[str, ...] = ()
    high_importance_only: bool = False
    fallback: bool = False
    enabled: bool = True
    test_mode: bool = False
    # For the words of a test route's would-be outcome.
    client_name: str = ""
    default_priority: str | None = None

    @property
    def wildcard(self) -> bool:
        return "*" in self.recipients


@dataclass(frozen=True)
class MailFacts:
    sender: str  # lower-case address
    recipients: tuple[str, ...]  # To and Cc, lower-case, plus tags removed
    subject: str = ""
    attachment_names: tuple[str, ...] = ()
    attachment_types: tuple[str, ...] = ()
    priority: str = "normal"


@dataclass
class RouteChoice:
    client_id: int | None  # None = unprocessed
    rule: RouteRule | None = None
    reason: str = ""
    trace: list[str] = field(default_factory=list)
    # Routes in test that matched, each with what it would have done ("filed this under …").
    tested: list[tuple[RouteRule, str]] = field(default_factory=list)


def ticket_priority(mail_priority: str, route_priority: str | None, mailbox_priority: str) -> str:
    """A new ticket's priority: the mail's own when it is marked, else the route's, else the mailbox's."""
    if mail_priority != "normal":
        return mail_priority
    return route_priority or mailbox_priority


def strip_plus(address: str) -> str:
    """`support+T-1.abcde@x` → `support@x`: a plus tag still reaches the mailbox."""
    local, at, domain = address.lower().rpartition("@")
    if not at:
        return address.lower()
    return f"{local.split('+', 1)[0]}@{domain}"


def sender_known(sender: str, addresses: Mapping[str, int], domains: Mapping[str, int],
                 contacts: Iterable[str] | Mapping[str, object]) -> str | None:
    """How a sender is known to the MSP, for a mailbox that accepts only allowed senders: an
    allow-list entry of any client in the tree, or a contact; None when nothing knows it."""
    if not sender:
        return None
    claim = allow_list_match(sender, addresses, domains)
    if claim is not None:
        return f"on an allow-list ({claim[1]})"
    if sender in contacts:
        return "a known contact"
    return None


def sender_matches(pattern: str, sender: str) -> bool:
    """Patterns: `*`, `user@domain`, `*@domain`, `domain` (also matches its subdomains)."""
    pattern = pattern.strip().lower()
    sender = sender.lower()
    if pattern == "*":
        return True
    domain = sender.rpartition("@")[2]
    if pattern.startswith("*@"):
        return domain == pattern[2:]
    if "@" in pattern:
        return sender == pattern
    pattern = pattern.lstrip("@")
    return domain == pattern or domain.endswith("." + pattern)


def _conditions_hold(rule: RouteRule, facts: MailFacts) -> tuple[bool, str]:
    if rule.senders and not any(sender_matches(p, facts.sender) for p in rule.senders):
        return False, "sender not on its list"
    if rule.subject_keywords:
        subject = facts.subject.lower()
        if not any(k.lower() in subject for k in rule.subject_keywords):
            return False, "no subject keyword"
    if rule.attachment_types:
        wanted = {t.lower().lstrip(".") for t in rule.attachment_types}
        have = {n.rpartition(".")[2].lower() for n in facts.attachment_names if "." in n}
        have |= {t.lower() for t in facts.attachment_types}
        if not wanted & have:
            return False, "no attachment of its types"
    if rule.high_importance_only and facts.priority != "high":
        return False, "not marked important"
    return True, ""


def _tried(rule: RouteRule, facts: MailFacts, choice: RouteChoice, mailbox_priority: str) -> bool:
    """Whether the route takes the mail. A route in test that would have taken it is recorded and
    does not take it; one whose conditions fail is noted in the trace."""
    ok, why = _conditions_hold(rule, facts)
    label = f"route {rule.name!r}" + (" (test)" if rule.test_mode else "")
    if not ok:
        choice.trace.append(f"{label} skipped: {why}")
        return False
    if not rule.test_mode:
        return True
    priority = ticket_priority(facts.priority, rule.default_priority, mailbox_priority)
    what = f"filed this under {rule.client_name or f'client {rule.client_id}'} with priority {priority}"
    choice.tested.append((rule, what))
    choice.trace.append(f"{label} would have {what}; not applied, the next route decides")
    return False


def choose_route(rules: Sequence[RouteRule], facts: MailFacts, primary: str, aliases: Iterable[str], *,
                 mailbox_priority: str = "normal") -> RouteChoice:
    primary = primary.lower()
    ours = {primary, *(a.lower() for a in aliases)}
    visible = [r for r in facts.recipients if r in ours]
    active = [r for r in rules if r.enabled]
    choice = RouteChoice(None)

    exact = [r for r in active if not r.fallback and not r.wildcard]
    for rule in exact:
        named = {a.lower() for a in rule.recipients}
        if not named & set(facts.recipients):
            continue
        if _tried(rule, facts, choice, mailbox_priority):
            choice.client_id, choice.rule, choice.reason = rule.client_id, rule, f"route {rule.name!r} (recipient)"
            return choice

    for rule in (r for r in active if r.wildcard and not r.fallback):
        if not rule.senders:
            continue  # refused at configuration time; never a catch-all by accident
        if _tried(rule, facts, choice, mailbox_priority):
            choice.client_id, choice.rule, choice.reason = rule.client_id, rule, f"route {rule.name!r} (wildcard)"
            return choice

    if not visible:
        choice.reason = (f"{BCC_CAUSE}: no route matches its To/Cc addresses, and the mailbox has no wildcard "
                         f"route for {facts.sender or 'this sender'}")
        return choice
    routed_aliases = {a.lower() for r in active if not r.test_mode for a in r.recipients if a != "*"}
    if primary not in visible and not routed_aliases & set(visible):
        choice.reason = f"sent to {', '.join(visible)}, an alias no route names"
        return choice
    fallback = next((r for r in active if r.fallback), None)
    if fallback is None:
        choice.reason = "no route matched and the mailbox has no fallback route"
        return choice
    choice.client_id, choice.rule, choice.reason = fallback.client_id, fallback, f"fallback route {fallback.name!r}"
    return choice


def choose_by_default_order(
    facts: MailFacts,
    primary: str,
    aliases: Iterable[str],
    *,
    allowed_addresses: Mapping[str, int],
    allowed_domains: Mapping[str, int],
    contact_client: int | None,
    mailbox_client: int,
) -> RouteChoice:
    """The mailbox has no routes. The mappings hold the allow-lists of the clients in the
    mailbox's tree (normalised values → client id)."""
    ours = {primary.lower(), *(a.lower() for a in aliases)}
    if not ours & set(facts.recipients):
        return RouteChoice(None, reason=f"{BCC_CAUSE}: none of its To/Cc addresses is the mailbox's, and the "
                                        "mailbox has no wildcard route (it decides by allow-lists, which cannot "
                                        "place BCC'd mail)")
    claim = allow_list_match(facts.sender, allowed_addresses, allowed_domains)
    if claim is not None:
        client_id, entry = claim
        what = f"sender {entry}" if "@" in entry else f"domain {entry}"
        return RouteChoice(client_id, reason=f"{what} is on an allow-list")
    if contact_client is not None:
        return RouteChoice(contact_client, reason=f"{facts.sender} is a known contact")
    return RouteChoice(mailbox_client, reason="catch-all: the mailbox's own client")
