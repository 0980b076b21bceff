"""Alert rules (DESIGN step 9): how a route reads a problem key and a state (problem or recovery)
from monitoring mail, checked when it is saved, and when a key is flapping. Pure: the caller
passes the subject, the body text and a way to read a header.

A rule, as stored on the route and written in the configuration file:

    key:   {from: subject | body | header, header: X-Alert-Key, pattern: '(?P<host>…)/(?P<check>…)'}
    state: {from: key | subject | body | header, header: X-Alert-State, pattern: '(?P<state>…)'}
    problem: [PROBLEM, DOWN, CRITICAL]      # words that mean a problem
    recovery: [RECOVERY, OK, UP]            # words that mean it is over (they win over problem words)
    on_recovery: resolve | mark             # a recovery resolves the ticket, or only marks it
    flap_changes: 4                          # more than this many state changes …
    flap_minutes: 60                         # … within this many minutes: the key is flapping

The key is the pattern's named groups that matched joined by "/" (a group named `state` is not
part of it);
a header without a pattern is its whole value. The state text is the `state` group of its
pattern, else the whole header, else (subject or body without a pattern) the first problem or
recovery word found; `from: key` takes the `state` group of the key's own pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

PROBLEM, RECOVERY = "problem", "recovery"
SOURCES = ("subject", "body", "header")
STATE_SOURCES = ("key", *SOURCES)
ON_RECOVERY = ("resolve", "mark")
# Only the start of a body is searched: a monitoring mail says what it is about early, and a
# pattern over a long body costs time for every mail the route takes.
BODY_LIMIT = 10_000
KEY_LIMIT = 300
DEFAULT_PROBLEM = ("PROBLEM", "CRITICAL", "DOWN", "WARNING", "FAILED")
DEFAULT_RECOVERY = ("RECOVERY", "OK", "UP", "RESOLVED")
DEFAULT_FLAP_CHANGES, DEFAULT_FLAP_MINUTES = 4, 60
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,100}$")  # printable ASCII without the colon (RFC 5322 field name)


class AlertRuleError(ValueError):
    """What is wrong with a rule: field → messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


@dataclass(frozen=True)
class AlertReading:
    key: str
    state: str  # PROBLEM or RECOVERY
    state_text: str


@dataclass(frozen=True)
class AlertRule:
    key_from: str
    key_header: str
    key_pattern: re.Pattern | None
    state_from: str
    state_header: str
    state_pattern: re.Pattern | None
    problem: tuple[str, ...]
    recovery: tuple[str, ...]
    on_recovery: str
    flap_changes: int
    flap_minutes: int

    def read(self, subject: str, body: str, header: Callable[[str], str | None]) -> tuple[AlertReading | None, str]:
        """(reading, "") or (None, why the mail does not read as an alert)."""
        key_text = self._text(self.key_from, self.key_header, subject, body, header)
        if key_text is None:
            return None, f"no {self.key_header} header"
        groups: dict[str, str] = {}
        if self.key_pattern is not None:
            found = self.key_pattern.search(key_text)
            if found is None:
                return None, f"the key pattern does not match the {self.key_from}"
            groups = {k: (v or "").strip() for k, v in found.groupdict().items()}
            key = "/".join(v for k, v in groups.items() if k != "state" and v)
        else:
            key = key_text.strip()
        if not key:
            return None, "the key is empty"
        state_text = self._state_text(groups, subject, body, header)
        if not state_text:
            return None, "no state found"
        state = self.state_of(state_text)
        if state is None:
            return None, f"the state {state_text[:60]!r} is neither a problem nor a recovery word"
        return AlertReading(key[:KEY_LIMIT], state, state_text[:60]), ""

    def state_of(self, text: str) -> str | None:
        words = set(re.findall(r"\w+", text.upper()))
        if words & set(self.recovery):
            return RECOVERY
        if words & set(self.problem):
            return PROBLEM
        return None

    def _state_text(self, groups: dict[str, str], subject: str, body: str, header) -> str | None:
        if self.state_from == "key":
            return groups.get("state")
        text = self._text(self.state_from, self.state_header, subject, body, header)
        if text is None:
            return None
        if self.state_pattern is not None:
            found = self.state_pattern.search(text)
            return (found.groupdict().get("state") or found.group(0)).strip() if found else None
        if self.state_from == "header":
            return text.strip()
        words = re.findall(r"\w+", text.upper())
        # A recovery word wins ("OK, was CRITICAL"), as in state_of.
        return next((w for w in words if w in self.recovery), None) or next((w for w in words if w in self.problem), None)

    @staticmethod
    def _text(source: str, name: str, subject: str, body: str, header) -> str | None:
        if source == "subject":
            return subject or ""
        if source == "body":
            return (body or "")[:BODY_LIMIT]
        value = header(name)
        return None if value is None else str(value)


def _words(value, default: Iterable[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    items = value.replace(",", "\n").splitlines() if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(w).strip().upper() for w in items if str(w).strip()))


def clean_alert_rule(raw: dict | None) -> dict | None:
    """The rule in its stored form, checked (AlertRuleError, by form field), or None for none."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise AlertRuleError({"alert_rule": ["An alert rule is a mapping (key, state, problem, recovery, …)."]})
    errors: dict[str, list[str]] = {}
    key = raw.get("key") if isinstance(raw.get("key"), dict) else {}
    state = raw.get("state") if isinstance(raw.get("state"), dict) else {"from": "key"}
    known = {"key", "state", "problem", "recovery", "on_recovery", "flap_changes", "flap_minutes"}
    extra = sorted(str(k) for k in raw if k not in known)
    if extra:
        errors.setdefault("alert_rule", []).append(f"Unknown alert rule field(s): {', '.join(extra)}.")
    out_key = _clean_source(key, SOURCES, "key", errors)
    out_state = _clean_source(state, STATE_SOURCES, "state", errors)
    if out_key and not errors.get("alert_key_pattern"):
        pattern = out_key["pattern"]
        names = [n for n in (re.compile(pattern).groupindex if pattern else {}) if n != "state"]
        if pattern and not names:
            errors.setdefault("alert_key_pattern", []).append(
                "Name at least one group for the key, e.g. (?P<host>[^/]+)/(?P<check>.+).")
        if not pattern and out_key["from"] != "header":
            errors.setdefault("alert_key_pattern", []).append(
                "Give a pattern with named groups for the key (only a header can be the key as it is).")
        if out_state and out_state["from"] == "key" and "state" not in (re.compile(pattern).groupindex if pattern else {}):
            errors.setdefault("alert_state_from", []).append(
                "The key's pattern has no group named state: add (?P<state>…) to it, or read the state elsewhere.")
    problem = _words(raw.get("problem"), DEFAULT_PROBLEM)
    recovery = _words(raw.get("recovery"), DEFAULT_RECOVERY)
    if not problem:
        errors.setdefault("alert_problem_words", []).append("Name at least one word that means a problem.")
    if not recovery:
        errors.setdefault("alert_recovery_words", []).append("Name at least one word that means a recovery.")
    if set(problem) & set(recovery):
        errors.setdefault("alert_recovery_words", []).append(
            "A word cannot mean both: " + ", ".join(sorted(set(problem) & set(recovery))) + ".")
    on_recovery = raw.get("on_recovery") or "resolve"
    if on_recovery not in ON_RECOVERY:
        errors.setdefault("alert_on_recovery", []).append("A recovery either resolves the ticket or only marks it.")
    flap = {}
    for name, default, low, high in (("flap_changes", DEFAULT_FLAP_CHANGES, 2, 100),
                                     ("flap_minutes", DEFAULT_FLAP_MINUTES, 1, 7 * 24 * 60)):
        value = raw.get(name, default)
        try:
            value = int(value if value not in (None, "") else default)
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high or isinstance(raw.get(name), bool):
            errors.setdefault(f"alert_{name}", []).append(f"A whole number from {low} to {high}.")
        flap[name] = value
    if errors:
        raise AlertRuleError(errors)
    return {"key": out_key, "state": out_state, "problem": list(problem), "recovery": list(recovery),
            "on_recovery": on_recovery, **flap}


def _clean_source(part: dict, sources: tuple[str, ...], label: str, errors: dict) -> dict | None:
    source = part.get("from") or ("subject" if label == "key" else "key")
    header = str(part.get("header") or "").strip()
    pattern = str(part.get("pattern") or "")
    if source not in sources:
        errors.setdefault(f"alert_{label}_from", []).append(f"Read the {label} from one of: {', '.join(sources)}.")
        return None
    if source == "header" and not _HEADER_NAME.match(header):
        errors.setdefault(f"alert_{label}_header", []).append("Name the header, e.g. X-Alert-Key.")
    if len(pattern) > 1000:
        errors.setdefault(f"alert_{label}_pattern", []).append("At most 1,000 characters.")
    elif pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.setdefault(f"alert_{label}_pattern", []).append(f"Not a valid regular expression: {exc}.")
    return {"from": source, "header": header if source == "header" else "", "pattern": pattern}


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern | None:
    return re.compile(pattern, re.IGNORECASE) if pattern else None


def compile_rule(stored: dict) -> AlertRule:
    """The stored (cleaned) rule, ready to read mail."""
    key, state = stored["key"], stored.get("state") or {"from": "key", "header": "", "pattern": ""}
    return AlertRule(key["from"], key.get("header", ""), _compile(key.get("pattern", "")),
                     state["from"], state.get("header", ""), _compile(state.get("pattern", "")),
                     tuple(stored.get("problem") or DEFAULT_PROBLEM), tuple(stored.get("recovery") or DEFAULT_RECOVERY),
                     stored.get("on_recovery", "resolve"), int(stored.get("flap_changes", DEFAULT_FLAP_CHANGES)),
                     int(stored.get("flap_minutes", DEFAULT_FLAP_MINUTES)))


def recent_changes(changes: Iterable[str], now: datetime, minutes: int, *, add: bool) -> list[str]:
    """The state changes (ISO times) within the last `minutes`, with one more at `now` if `add`."""
    since = now - timedelta(minutes=minutes)
    kept = [c for c in changes if datetime.fromisoformat(c) >= since]
    return [*kept, now.isoformat()] if add else kept


def flapping(changes: list[str], rule: AlertRule) -> bool:
    """More state changes than the rule allows within its window (`changes` already windowed)."""
    return len(changes) > rule.flap_changes
