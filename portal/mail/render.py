"""Outbound templates: user-editable, rendered in a sandbox with a fixed list of variables.

A template text is "first line = subject, the rest = body", in a plain-text and an HTML variant
(`<event>.template`, `<event>.html.template`). With only the HTML variant the text part is derived
from it. Rendering uses Jinja2's immutable sandbox with these extra caps (the environment and the
budget are in portal/mail/sandbox.py), because templates are written by tenants and render in
shared workers:

- only the variables in VARIABLES exist, as plain dicts and strings (StrictUndefined: a misspelt
  name is an error, not an empty string);
- no single value may grow beyond MAX_VALUE_CHARS (string repetition, padding, replace, join and
  format widths are checked BEFORE the work is done), integers stay below MAX_INT_BITS bits,
  ranges below MAX_RANGE numbers;
- a render may create at most MAX_WORK_CHARS characters in all, run MAX_LOOP_ITERATIONS loop
  iterations in all, and produce MAX_OUTPUT_CHARS per part;
- a wall-clock limit (RENDER_TIME_LIMIT), checked at every loop iteration, call, filter, operator
  and output, so it works in any thread (no signals).

Nothing here imports Flask, SQLAlchemy or RQ.
"""
from __future__ import annotations

import datetime as dt
import functools
import html as html_lib
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from markupsafe import Markup

from portal.mail.html_body import html_to_text, html_too_complex
from portal.mail.language import DEFAULT_LANGUAGE, LANGUAGES, ticket_word, written_time
from portal.mail.refs import REPLY_MARKER
from portal.mail.sandbox import TEXT_ENV, Budget, LimitError, Variables, compile_template, current_budget, tick
from portal.mail.sanitize import sanitize_html
from portal.mail.times import UTC

EVENTS = ("ticket_created", "reply", "note_added", "reopened", "owner_changed",
          "priority_changed", "closed", "alert", "mailbox_failing", "sign_in_expiring", "reconnect_needed",
          "sla_warning", "sla_breached", "sla_changed")

# The documented variables; nothing else reaches a template.
VARIABLES: dict[str, str] = {
    "ticket.reference": "the ticket's reference, e.g. T-1042",
    "ticket.subject": "the ticket's subject",
    "ticket.status": "the ticket's status: new, open, waiting, resolved, closed or archived (in the client's language)",
    "ticket.priority": "the ticket's priority, e.g. normal or high (in the client's language)",
    "ticket.url": "link to the ticket in the portal",
    "ticket.created": "when the ticket was opened, in the client's time zone, e.g. 2024-03-05 15:20 CET",
    "client.name": "the customer (client) the ticket belongs to",
    "contact.name": "the person who wrote in",
    "contact.email": "that person's email address",
    "assignee.name": "the technician looking after the ticket (empty when nobody is)",
    "assignee.email": "that technician's email address",
    "message.text": "the latest message on the ticket, as plain text",
    "message.html": "the latest message on the ticket, as cleaned-up HTML",
    "message.author": "who wrote the latest message",
    "message.signature": "a reply's sign-off as the technician saw (and perhaps edited) it in the composer",
    "message.date": "when the latest message was written, in the client's time zone, e.g. 2024-03-05 15:20 CET",
    "msp.name": "your company's name",
    "portal_url": "the address of the portal",
    "reply_marker": "the 'reply above this line' marker; keep it at the top of mail that people answer",
    "mailbox.address": "alert and mailbox_failing only: the mailbox's address",
    "mailbox.last_error": "alert and mailbox_failing only: the mailbox's last error, in plain words",
    "mailbox.failure_count": "alert and mailbox_failing only: how many times in a row it failed",
    "mailbox.expiring": "sign_in_expiring only: what expires, the sign-in grant or the app's client secret",
    "mailbox.expires_on": "sign_in_expiring only: the day it expires, e.g. 2027-06-30",
    "mailbox.days_left": "sign_in_expiring only: how many whole days are left",
    "mailbox.reason": "reconnect_needed only: why the provider refused the sign-in, in plain words with its code",
    "mailbox.account": "sign_in_expiring and reconnect_needed only: the account the mailbox was connected as",
    "sla.policy": "SLA mail only: the name of the ticket's SLA policy",
    "sla.clock": "sla_warning and sla_breached only: which clock, first response or resolution",
    "sla.due": "sla_warning and sla_breached only: when that clock is due, in the client's time zone",
    "sla.share": "sla_warning only: the share of the target (per cent) after which the warning goes out",
    "sla.response_due": "SLA mail only: when the first response is due, in the client's time zone (empty: no target)",
    "sla.resolution_due": "SLA mail only: when the resolution is due, in the client's time zone (empty: no target)",
}

RENDER_TIME_LIMIT = 2.0  # seconds, for subject + text + HTML together
MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_SUBJECT_CHARS = 500

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent / "default_templates"
_TEMPLATE_FILENAME = "<template>"  # what Jinja names frames of templates made from strings


# --- results and errors -----------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateProblem:
    line: int | None
    message: str
    part: str = "text"  # "text" or "html": which of the two template files

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "template"
        return f"{self.part} {where}: {self.message}"


class TemplateError(Exception):
    """A template could not be rendered; nothing may be sent. Carries the line for the editor."""

    def __init__(self, message: str, line: int | None = None, part: str = "text"):
        super().__init__(message)
        self.message = message
        self.line = line
        self.part = part

    @property
    def problem(self) -> TemplateProblem:
        return TemplateProblem(self.line, self.message, self.part)

    def __str__(self) -> str:
        return str(self.problem)

    def __reduce__(self):
        return (type(self), (self.message, self.line, self.part))


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None  # None: the template has no HTML variant


# --- context -----------------------------------------------------------------------------------


def _blank_context() -> dict:
    context: dict = {}
    for key in VARIABLES:
        group, _, name = key.partition(".")
        if name:
            context.setdefault(group, {})[name] = 0 if name in ("failure_count", "days_left") else ""
        else:
            context[group] = ""
    context["reply_marker"] = REPLY_MARKER
    return context


def _plain(value, tz: dt.tzinfo = UTC, language: str = DEFAULT_LANGUAGE):
    """Only plain values reach a template: strings, numbers, markup (for message.html); a time
    reads in `tz` (the client's zone), with the zone's abbreviation, written in `language`."""
    if value is None:
        return ""
    if isinstance(value, (Markup, str, bool, int, float)):
        return value
    if isinstance(value, dt.datetime):
        return written_time(value, tz, language)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def template_context(context: Mapping, tz: dt.tzinfo = UTC, language: str = DEFAULT_LANGUAGE) -> dict:
    """The context a template sees: the documented variables only, as plain values, times in
    `tz` (the zone of the client the mail is for) written in its `language`.

    Missing variables are empty; unknown keys are dropped.
    """
    result = _blank_context()
    for group, default in result.items():
        given = context.get(group) if isinstance(context, Mapping) else None
        if isinstance(default, dict):
            values = Variables()
            values._tm_path = group
            given = given if isinstance(given, Mapping) else {}
            for name, blank in default.items():
                value = given.get(name)
                values[name] = blank if value is None else _plain(value, tz, language)
            result[group] = values
        elif given is not None and group != "reply_marker":
            result[group] = _plain(given, tz, language)
    for name in ("status", "priority"):
        if isinstance(word := result["ticket"][name], str):
            result["ticket"][name] = ticket_word(word, language)
    message = result["message"]
    html = message["html"]
    if html:
        message["html"] = Markup(sanitize_html(str(html)))
        if not message["text"]:
            message["text"] = html_to_text(str(message["html"]))
    elif message["text"]:
        message["html"] = Markup("<br>\n".join(html_lib.escape(line) for line in str(message["text"]).split("\n")))
    return result


def sample_context() -> dict:
    """A believable ticket for previews and validation: every variable has a value."""
    return {
        "ticket": {"reference": "T-1042", "subject": "Printer on the 2nd floor prints blank pages",
                   "status": "open", "priority": "normal",
                   "created": dt.datetime(2024, 3, 5, 14, 21, tzinfo=dt.timezone.utc),
                   "url": "https://portal.harbor-it.example/tickets/T-1042"},
        "client": {"name": "Northwind Traders"},
        "contact": {"name": "Anna Müller", "email": "anna.mueller@northwind.example"},
        "assignee": {"name": "Sam Patel", "email": "sam.patel@harbor-it.example"},
        "message": {
            "text": "Hello,\n\nsince this morning the printer next to reception only prints blank pages.\n"
                    "We already restarted it.\n\nThanks,\nAnna",
            "html": "",
            "author": "Anna Müller",
            "signature": "Sam Patel\nHarbor IT",
            "date": dt.datetime(2024, 3, 5, 14, 20, tzinfo=dt.timezone.utc),
        },
        "msp": {"name": "Harbor IT"},
        "portal_url": "https://portal.harbor-it.example",
        "mailbox": {"address": "support@harbor-it.example",
                    "last_error": "could not connect to mail.harbor-it.example:993: connection refused",
                    "failure_count": 5, "expiring": "client secret", "expires_on": "2024-03-19", "days_left": 14,
                    "reason": "The app's client secret has expired (AADSTS7000222): create a new one and enter it.",
                    "account": "support@harbor-it.example"},
        "sla": {"policy": "Standard support", "clock": "first response",
                "due": dt.datetime(2024, 3, 5, 15, 20, tzinfo=dt.timezone.utc), "share": 80,
                "response_due": dt.datetime(2024, 3, 5, 15, 20, tzinfo=dt.timezone.utc),
                "resolution_due": dt.datetime(2024, 3, 6, 14, 20, tzinfo=dt.timezone.utc)},
    }


# --- rendering -------------------------------------------------------------------------------


def _normalize(source: str | None) -> str:
    return (source or "").replace("\r\n", "\n").replace("\r", "\n")


def _split(source: str) -> tuple[str, str]:
    subject, _, body = source.partition("\n")
    return subject, body


def _error_line(exc: BaseException) -> int | None:
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == _TEMPLATE_FILENAME:
            line = frame.lineno
    return line


def _words(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, LimitError):
        return str(exc)
    if isinstance(exc, UndefinedError):
        return str(exc.message)
    if isinstance(exc, SecurityError):
        return f"not allowed: {exc}"
    if isinstance(exc, RecursionError):
        return "the template calls itself too deeply"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, MemoryError):
        return "the template needs too much memory"
    return f"{type(exc).__name__}: {exc}"


def _render_one(source: str, html: bool, context: dict, offset: int, part: str) -> str:
    """Render one piece; errors become TemplateError with the line in the editor's numbering."""
    budget = current_budget.get()
    try:
        template = compile_template(html, source)
        out: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise LimitError(f"the template produces more than {MAX_OUTPUT_CHARS:,} characters")
            if budget is not None:
                budget.tick()
            out.append(chunk)
        return "".join(out)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user template is the editor's to see
        line = _error_line(exc)
        raise TemplateError(_words(exc), None if line is None else line + offset, part) from None


def _clean_subject(subject: str) -> str:
    return " ".join(subject.split())[:MAX_SUBJECT_CHARS]


def _clean_text(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    # Lines that held only {% if %}/{% endif %} leave blank lines behind: at most one in a row.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def inline_css(html: str, *, keep_at_rules: bool = False) -> str:
    """Move <style> rules onto the elements (mail clients drop <style>); never fetches anything.
    keep_at_rules: @media rules (which cannot be inlined) stay in a <style> of their own."""
    import css_inline

    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=False,
                                 keep_at_rules=keep_at_rules).inline(html)


def render(event_texts: tuple[str | None, str | None], context: Mapping, *,
           time_limit: float = RENDER_TIME_LIMIT, tz: dt.tzinfo = UTC,
           language: str = DEFAULT_LANGUAGE) -> RenderedEmail:
    """Render (text_source, html_source) for one mail. Raises TemplateError; sends nothing.

    context: nested plain dicts as in sample_context(); see template_context() for what is kept.
    tz, language: the zone the mail's times read in and the language they are written in (the
    client's; the caller looks them up).
    """
    text_source, html_source = (_normalize(s) for s in event_texts)
    if not text_source.strip() and not html_source.strip():
        raise TemplateError("the template is empty", None, "text")
    for source, part in ((text_source, "text"), (html_source, "html")):
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the template is longer than {MAX_TEMPLATE_CHARS:,} characters", None, part)
    values = template_context(context, tz, language)
    token = current_budget.set(Budget(time_limit))
    try:
        subject = html = None
        text = None
        if text_source.strip():
            subject_source, body = _split(text_source)
            subject = _render_one(subject_source, False, values, 0, "text")
            text = _render_one(body, False, values, 1, "text")
        if html_source.strip():
            html_subject_source, html_body = _split(html_source)
            if subject is None:
                # The subject is plain text even in the HTML file: no escaping.
                subject = _render_one(html_subject_source, False, values, 0, "html")
            html = _render_one(html_body, True, values, 1, "html")
            tick()
            if hostile := html_too_complex(html):  # CSS inlining and the text part would take minutes
                raise TemplateError(f"the HTML it makes {hostile}", None, "html")
            try:
                html = inline_css(html)
            except Exception as exc:  # noqa: BLE001 - css-inline reports bad CSS as ValueError
                raise TemplateError(f"the CSS could not be inlined: {exc}", None, "html") from None
            if text is None:
                text = html_to_text(html)
        tick()
    except LimitError as exc:
        raise TemplateError(str(exc), None, "html" if html_source else "text") from None
    finally:
        current_budget.reset(token)
    return RenderedEmail(subject=_clean_subject(subject or ""), text=_clean_text(text or ""), html=html)


def validate_template(text_source: str | None, html_source: str | None, *,
                      time_limit: float = RENDER_TIME_LIMIT) -> list[TemplateProblem]:
    """Problems for the editor, each with its line: syntax, unknown variables, limits.

    Unknown top-level names are found in every branch without running anything; then each
    variant is rendered against sample_context(), which also catches unknown attributes
    (`ticket.refrence`) and limits on the lines the sample runs through.
    """
    problems: list[TemplateProblem] = []
    text_source, html_source = _normalize(text_source), _normalize(html_source)
    if not text_source.strip() and not html_source.strip():
        return [TemplateProblem(None, "the template is empty: write the subject on the first line, "
                                      "then the body", "text")]
    values = template_context(sample_context())
    for source, html, part in ((text_source, False, "text"), (html_source, True, "html")):
        if not source.strip():
            continue
        if len(source) > MAX_TEMPLATE_CHARS:
            problems.append(TemplateProblem(None, f"the template is longer than {MAX_TEMPLATE_CHARS:,} "
                                                  "characters", part))
            continue
        subject_source, body = _split(source)
        if not subject_source.strip():
            problems.append(TemplateProblem(1, "the first line is the subject and must not be empty", part))
        problems.extend(_unknown_names(subject_source, 0, part))
        problems.extend(_unknown_names(body, 1, part))
        token = current_budget.set(Budget(time_limit))
        try:
            for piece, is_html, offset in ((subject_source, False, 0), (body, html, 1)):
                try:
                    made = _render_one(piece, is_html, values, offset, part)
                except TemplateError as exc:
                    if exc.problem not in problems:
                        problems.append(exc.problem)
                    continue
                if is_html and (hostile := html_too_complex(made)):
                    problems.append(TemplateProblem(None, f"the HTML it makes {hostile}", part))
        finally:
            current_budget.reset(token)
    return problems


def _unknown_names(source: str, offset: int, part: str) -> list[TemplateProblem]:
    """Top-level names used but neither documented nor set in the template (found without running it)."""
    try:
        tree = TEXT_ENV.parse(source)
    except TemplateSyntaxError:
        return []  # reported when rendering
    known = {key.partition(".")[0] for key in VARIABLES} | set(TEXT_ENV.globals)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned |= {n.name for n in tree.find_all(nodes.Macro)}
    assigned |= {"loop", "caller", "varargs", "kwargs"}
    found, problems = set(), []
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in known and name.name not in assigned and name.name not in found:
            found.add(name.name)
            problems.append(TemplateProblem(name.lineno + offset, f"unknown variable '{name.name}'", part))
    return problems


# --- built-in templates ----------------------------------------------------------------------


# The alternatives of an event's template that ship built in, next to its standard one.
BUILTIN_VARIANTS: dict[str, tuple[str, ...]] = {"ticket_created": ("short", "detailed")}


@functools.lru_cache(maxsize=None)
def load_default(event: str, language: str = DEFAULT_LANGUAGE, variant: str = "") -> tuple[str, str]:
    """The built-in (text_source, html_source) of an event, in `language` (English for mail to the
    MSP's own people, which is written in English only), the standard one or a built-in
    alternative (`variant`)."""
    if event not in EVENTS:
        raise ValueError(f"unknown template event {event!r}; known: {', '.join(EVENTS)}")
    if variant and variant not in BUILTIN_VARIANTS.get(event, ()):
        raise ValueError(f"no built-in {variant!r} alternative of the {event} template")
    name = f"{event}.{variant}" if variant else event
    folder = DEFAULT_TEMPLATES_DIR / language if language in LANGUAGES and language != DEFAULT_LANGUAGE else None
    if folder is None or not (folder / f"{name}.template").exists():
        folder = DEFAULT_TEMPLATES_DIR
    text = (folder / f"{name}.template").read_text(encoding="utf-8")
    html = (folder / f"{name}.html.template").read_text(encoding="utf-8")
    return text, html
