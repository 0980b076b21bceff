"""Extraction rules (DESIGN step 9): a route's rules that read a value out of the subject, the
visible body or a named header with a regular expression, and the checks that the value fits
where it goes (a custom field of its kind, the type allow-list, a priority, an SLA policy, a
contact address). Plain Python: the pipeline hands in the mail and what the MSP has set up.

Python's re has no time limit, so a pattern is searched over a capped text (the body's first
BODY_CAP characters, a header or subject as it is, up to TEXT_CAP) and patterns that nest
quantifiers, the usual cause of catastrophic backtracking, are refused when a rule is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from email_validator import EmailNotValidError, validate_email

from portal.mail.parse.headers import decode_words

SOURCES = ("subject", "body")  # and header:NAME
TARGETS = ("type", "priority", "sla", "contact")  # and field:NAME
BODY_CAP = 64 * 1024
TEXT_CAP = 4096  # a subject or header longer than this is searched only this far
PATTERN_MAX = 500
VALUE_MAX = 500
PRIORITIES = ("low", "normal", "high")  # as portal.models.tickets.PRIORITIES (the models are not imported here)
FIELD_KINDS = ("text", "number", "choice", "date")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable, no colon (RFC 5322 field name)
# A group that holds a quantifier and is itself quantified: (a+)+, (\w*)*, (x{2,}){3,}.
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d*,?\d*\})(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,\d*\})")
_NUMBER = re.compile(r"^[+-]?\d{1,15}(?:[.,]\d{1,10})?$")


@dataclass(frozen=True)
class Rule:
    source: str  # subject, body, header:NAME
    pattern: str
    target: str  # type, priority, sla, contact, field:NAME

    def as_dict(self) -> dict:
        return {"source": self.source, "pattern": self.pattern, "target": self.target}

    def describe(self) -> str:
        return f"{self.source} → {self.target}"


def rule_of(item: dict) -> Rule:
    return Rule(str(item.get("source", "")), str(item.get("pattern", "")), str(item.get("target", "")))


@dataclass
class Targets:
    """What the MSP has set up that a value may be checked against."""

    fields: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name → (kind, choices)
    types: list[str] = field(default_factory=list)  # the allow-list; empty: any type
    sla_policies: dict[str, int] = field(default_factory=dict)  # name casefolded → id


def check_rule(rule: Rule, targets: Targets) -> list[tuple[str, str]]:
    """What is wrong with a rule as typed: (part, message) with part source, pattern or target."""
    problems: list[tuple[str, str]] = []
    if rule.source.startswith("header:"):
        if not _HEADER_NAME.match(rule.source[7:].strip()):
            problems.append(("source", f"{rule.source!r}: name a header, e.g. header:X-Customer-Id."))
    elif rule.source not in SOURCES:
        problems.append(("source", f"{rule.source!r}: the source is subject, body or header:NAME."))
    problems += [("pattern", m) for m in pattern_problems(rule.pattern)]
    if rule.target.startswith("field:"):
        if rule.target[6:].strip() not in targets.fields:
            problems.append(("target", f"{rule.target!r}: there is no custom field called {rule.target[6:].strip()!r}."))
    elif rule.target not in TARGETS:
        problems.append(("target", f"{rule.target!r}: the target is type, priority, sla, contact or field:NAME."))
    return problems


def pattern_problems(pattern: str) -> list[str]:
    if not pattern:
        return ["Type a regular expression."]
    if len(pattern) > PATTERN_MAX:
        return [f"The pattern is at most {PATTERN_MAX} characters."]
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return [f"{pattern!r} is not a regular expression: {exc}."]
    if len(compiled.groupindex) != 1:
        return [f"{pattern!r}: give it exactly one named group, e.g. (?P<value>\\d+), for the value it takes."]
    if _NESTED.search(pattern):
        return [f"{pattern!r}: a repeated group that itself repeats, like (a+)+, can take minutes on some mail; "
                "write it without the nesting."]
    return []


def source_text(source: str, subject: str, body: str, header) -> str | None:
    """The text a rule searches, capped; None when the header is not there."""
    if source == "subject":
        return subject[:TEXT_CAP]
    if source == "body":
        return body[:BODY_CAP]
    raw = header(source[7:].strip())
    return None if raw is None else decode_words(raw)[:TEXT_CAP]


@dataclass
class Found:
    """One rule that fired: the value it took and what became of it."""

    rule: Rule
    raw: str
    value: str | None  # as applied; None: it did not fit
    why: str = ""  # why it did not fit


def run_rules(rules: list[Rule], subject: str, body: str, header, targets: Targets) -> list[Found]:
    """The value each rule takes from the mail, checked against its target; rules whose pattern
    finds nothing (or whose header is missing) do not fire."""
    found: list[Found] = []
    for rule in rules:
        text = source_text(rule.source, subject, body, header)
        if text is None:
            continue
        try:
            match = re.search(rule.pattern, text)
        except re.error:
            continue  # checked on save; a rule from before a check stays harmless
        if match is None:
            continue
        raw = (match.group(next(iter(match.re.groupindex))) or "").strip()
        value, why = fit(rule.target, raw, targets)
        found.append(Found(rule, raw, value, why))
    return found


def fit(target: str, raw: str, targets: Targets) -> tuple[str | None, str]:
    """(value as stored, "") or (None, why it does not fit the target)."""
    if not raw:
        return None, "the group took nothing"
    if len(raw) > VALUE_MAX:
        return None, f"longer than {VALUE_MAX} characters"
    if target == "priority":
        value = raw.lower()
        return (value, "") if value in PRIORITIES else (None, f"a priority is one of {', '.join(PRIORITIES)}")
    if target == "type":
        value = " ".join(raw.split())
        if len(value) > 60:
            return None, "a type is at most 60 characters"
        if targets.types:
            allowed = {t.casefold(): t for t in targets.types}
            if value.casefold() not in allowed:
                return None, "not on the MSP's list of ticket types"
            value = allowed[value.casefold()]
        return value, ""
    if target == "sla":
        key = " ".join(raw.split()).casefold()
        return (str(targets.sla_policies[key]), "") if key in targets.sla_policies \
            else (None, "no SLA policy of the MSP has that name")
    if target == "contact":
        try:
            checked = validate_email(raw, check_deliverability=False, allow_smtputf8=True,
                                     globally_deliverable=False, test_environment=True)
        except EmailNotValidError:
            return None, "not an email address"
        return checked.normalized.lower(), ""
    name = target[6:].strip() if target.startswith("field:") else ""
    if name not in targets.fields:
        return None, "no such custom field"
    kind, choices = targets.fields[name]
    try:
        return field_value(kind, choices, raw), ""
    except ValueError as exc:
        return None, str(exc)


def field_value(kind: str, choices: list[str], text: str) -> str:
    """A custom field's value as stored, or ValueError saying why it does not fit its kind."""
    text = " ".join((text or "").split())
    if len(text) > VALUE_MAX:
        raise ValueError(f"at most {VALUE_MAX} characters")
    if kind == "number":
        if not _NUMBER.match(text):
            raise ValueError("not a number")
        return text.lstrip("+").replace(",", ".")
    if kind == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError("not a date (YYYY-MM-DD)") from None
    if kind == "choice":
        by_fold = {c.casefold(): c for c in choices}
        if text.casefold() not in by_fold:
            raise ValueError(f"one of {', '.join(choices)}")
        return by_fold[text.casefold()]
    return text
