"""Outbound templates: user-editable, rendered in a sandbox with a fixed list of variables.

A template text is "first line = subject, the rest = body", in a plain-text and an HTML variant
(`<event>.template`, `<event>.html.template`). With only the HTML variant the text part is derived
from it. Rendering uses Jinja2's immutable sandbox with these extra caps, because templates are
written by tenants and render in shared workers:

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

import contextvars
import datetime as dt
import functools
import html as html_lib
import re
import string
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from portal.mail.html_body import html_to_text
from portal.mail.refs import REPLY_MARKER

EVENTS = ("ticket_created", "reply", "note_added", "reopened", "owner_changed",
          "priority_changed", "closed", "alert", "mailbox_failing")

# The documented variables; nothing else reaches a template.
VARIABLES: dict[str, str] = {
    "ticket.reference": "the ticket's reference, e.g. T-1042",
    "ticket.subject": "the ticket's subject",
    "ticket.status": "the ticket's status: new, open, waiting, resolved, closed or archived",
    "ticket.priority": "the ticket's priority, e.g. normal or high",
    "ticket.url": "link to the ticket in the portal",
    "client.name": "the customer (client) the ticket belongs to",
    "contact.name": "the person who wrote in",
    "contact.email": "that person's email address",
    "assignee.name": "the technician looking after the ticket (empty when nobody is)",
    "assignee.email": "that technician's email address",
    "message.text": "the latest message on the ticket, as plain text",
    "message.html": "the latest message on the ticket, as cleaned-up HTML",
    "message.author": "who wrote the latest message",
    "message.date": "when the latest message was written, e.g. 2024-03-05 14:20 UTC",
    "msp.name": "your company's name",
    "portal_url": "the address of the portal",
    "reply_marker": "the 'reply above this line' marker; keep it at the top of mail that people answer",
    "mailbox.address": "alert and mailbox_failing only: the mailbox's address",
    "mailbox.last_error": "alert and mailbox_failing only: the mailbox's last error, in plain words",
    "mailbox.failure_count": "alert and mailbox_failing only: how many times in a row it failed",
}

RENDER_TIME_LIMIT = 2.0  # seconds, for subject + text + HTML together
MAX_TEMPLATE_CHARS = 100_000
MAX_VALUE_CHARS = 1_000_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_WORK_CHARS = 20_000_000
MAX_LOOP_ITERATIONS = 100_000
MAX_RANGE = 10_000
MAX_INT_BITS = 4096
MAX_FORMAT_WIDTH = 10_000
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


class LimitError(SecurityError):
    """The template tried to compute more than it may."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None  # None: the template has no HTML variant


# --- the per-render budget -------------------------------------------------------------------


class _Budget:
    __slots__ = ("deadline", "limit", "work", "iterations")

    def __init__(self, time_limit: float):
        self.limit = time_limit
        self.deadline = time.monotonic() + time_limit
        self.work = 0
        self.iterations = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitError(f"the template took longer than {self.limit:g} seconds to render")

    def charge(self, chars: int) -> None:
        self.work += chars
        if self.work > MAX_WORK_CHARS:
            raise LimitError(f"the template computes too much text (more than {MAX_WORK_CHARS:,} characters)")
        self.tick()


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("tidemark_render_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise LimitError(message)


def _weight(value, limit: int = MAX_VALUE_CHARS) -> int:
    """Characters a value stands for, nested containers included; stops counting past limit."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 1
        if total > limit:
            break
    return total


def _checked(value, *, charge: bool = True):
    """Refuse a value above MAX_VALUE_CHARS; count what it cost against the render's budget."""
    weight = _weight(value)
    _need(weight <= MAX_VALUE_CHARS,
          f"the template builds a value larger than {MAX_VALUE_CHARS:,} characters")
    budget = _budget.get()
    if budget is not None:
        if charge and isinstance(value, (str, bytes, list, tuple, dict)):
            budget.charge(weight)
        else:
            budget.tick()
    return value


def _size_ok(size: int, what: str) -> None:
    _need(size <= MAX_VALUE_CHARS,
          f"{what} would make a text of {size:,} characters (the limit is {MAX_VALUE_CHARS:,})")


def _width_ok(width, what: str) -> None:
    if isinstance(width, int) and not isinstance(width, bool):
        _need(width <= MAX_FORMAT_WIDTH, f"{what} width {width:,} is too large (the limit is {MAX_FORMAT_WIDTH:,})")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise LimitError("a '*' width in % formatting is not allowed; write the number")
            if part:
                _width_ok(int(part), "the format")


def _check_brace_format(fmt: str, depth: int = 0) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise LimitError(f"bad format string: {exc}") from None
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        _need("{" not in spec, "nested {} inside a format specification is not allowed")
        for number in re.findall(r"\d+", spec):
            _width_ok(int(number), "the format")


def _join_items(iterable, separator: str) -> list:
    """The items of a join, counted as they come, so a huge join stops before it is built."""
    items, total = [], 0
    for item in iterable:
        items.append(item)
        total += _weight(item) + len(separator)
        _size_ok(total, "joining")
    return items


# --- capped filters, globals and string methods ------------------------------------------------


def _pre_center(value, width=80, *args, **kwargs):
    _size_ok(width if isinstance(width, int) else 0, "centering")


def _pre_indent(value, width=4, *args, **kwargs):
    lines = str(value).count("\n") + 1
    step = len(width) if isinstance(width, str) else int(width) if isinstance(width, int) else 0
    _size_ok(len(str(value)) + lines * step, "indenting")


def _pre_wordwrap(value, width=79, break_long_words=True, wrapstring=None, *args, **kwargs):
    text = str(value)
    _need(len(text) <= 100_000, "wordwrap is limited to texts of 100,000 characters")
    if isinstance(width, int) and width > 0:
        _size_ok(len(text) + (len(text) // width + 1) * len(wrapstring or "\n"), "wrapping")


def _replace_size(text: str, old: str, new: str, count=None) -> int:
    hits = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _pre_replace(value, old="", new="", count=None, *args, **kwargs):
    _size_ok(_replace_size(str(value), str(old), str(new), count), "replace")


def _pre_format(value, *args, **kwargs):
    _check_percent_format(str(value))


def _pre_truncate(value, length=255, killwords=False, end="...", *args, **kwargs):
    _size_ok(len(str(end or "")) + min(len(str(value)), length if isinstance(length, int) else 0), "truncate")


_FILTER_PRECHECKS = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "replace": _pre_replace,
    "format": _pre_format,
    "truncate": _pre_truncate,
}


def _guard_filter(name: str, func):
    precheck = _FILTER_PRECHECKS.get(name)
    passes_arg = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        _tick()
        if precheck is not None:
            rest = args[1:] if passes_arg else args
            precheck(*rest, **kwargs)
        return _checked(func(*args, **kwargs))

    return guarded


@pass_eval_context
def _join_filter(eval_ctx, value, d: str = "", attribute=None):
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = _join_items(value, str(d))
    if not eval_ctx.autoescape:
        return str(d).join(map(str, items))
    # Same escaping rule as Jinja's own join: escape unless everything is already markup.
    if not hasattr(d, "__html__") and not any(hasattr(i, "__html__") for i in items):
        return str(d).join(map(str, items))
    return Markup(d if hasattr(d, "__html__") else html_lib.escape(str(d))).join(items)


def _range(*args) -> range:
    numbers = range(*args)
    _need(len(numbers) <= MAX_RANGE,
          f"a range of {len(numbers):,} numbers is too large (the limit is {MAX_RANGE:,})")
    return numbers


def _loop(iterable):
    """Every for-loop iterates through this: it counts iterations and watches the clock."""
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.iterations += 1
            if budget.iterations > MAX_LOOP_ITERATIONS:
                raise LimitError(f"the template loops too often (more than {MAX_LOOP_ITERATIONS:,} times)")
            budget.tick()
        yield item


def _value(value):
    """Wraps literals and ~ concatenations (see _Guard) so that their size is checked."""
    return value


class _Buffer(list):
    """Output buffer of macros, {% set %} blocks, {% filter %} and {% call %} blocks: counted."""

    __slots__ = ()

    def append(self, item) -> None:
        budget = _budget.get()
        if budget is not None:
            budget.charge(len(item) if isinstance(item, str) else 1)
        super().append(item)

    def extend(self, items) -> None:
        for item in items:
            self.append(item)


def _check_str_method(method, args, kwargs) -> None:
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, (str, bytes)):
        return
    name = getattr(method, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        _size_ok(width if isinstance(width, int) else 0, name)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        _size_ok(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(int(tabsize), 0),
                 name)
    elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
        _size_ok(_replace_size(owner, str(args[0]), str(args[1]), args[2] if len(args) > 2 else None), name)


_STR_JOIN_NAMES = ("join",)


# --- the environment -------------------------------------------------------------------------


class _Guard(NodeTransformer):
    """Rewrites a parsed template so that every loop, literal and concatenation is checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("tm_loop"), [node.iter], [], None, None,
                               lineno=node.iter.lineno)
        return node

    def _wrap(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return nodes.Call(nodes.EnvironmentAttribute("tm_value"), [node], [], None, None, lineno=node.lineno)

    visit_Concat = visit_List = visit_Tuple = visit_Dict = _wrap


class _CodeGenerator(CodeGenerator):
    def buffer(self, frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.tm_buffer()")


class _Undefined(StrictUndefined):
    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        owner = self._undefined_obj
        if owner is _MISSING:
            return f"unknown variable '{name}'"
        if isinstance(owner, Variables):
            return f"unknown variable '{owner._tm_path}.{name}'"
        return f"{type(owner).__name__} value has no '{name}'"


_MISSING = _Undefined()._undefined_obj  # jinja's "missing" marker


class Variables(dict):
    """A variable group (ticket, client, …): a plain dict that knows its name for error messages."""

    __slots__ = ("_tm_path",)


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator

    tm_loop = staticmethod(_loop)
    tm_value = staticmethod(_value)
    tm_buffer = _Buffer

    def __init__(self, *, autoescape: bool):
        # No trim_blocks: an {% endif %} at the end of a line would eat the line break, which
        # surprises people writing mail; blank lines left by block tags are collapsed instead.
        super().__init__(autoescape=autoescape, undefined=_Undefined, lstrip_blocks=True,
                         finalize=self._finalize, auto_reload=False, cache_size=0)
        self.globals.clear()
        self.globals.update(range=_range, dict=dict, namespace=Namespace, cycler=Cycler, joiner=Joiner)
        filters = dict(self.filters)
        filters["join"] = _join_filter
        self.filters = {name: _guard_filter(name, func) for name, func in filters.items()}

    @staticmethod
    def _finalize(value):
        _tick()
        return value

    def _parse(self, source, name, filename):
        return _Guard().visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "*":
            _check_multiply(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _size_ok(_weight(left) + _weight(right), "adding")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return _checked(super().call_binop(context, operator, left, right))

    def call(self, context, obj, /, *args, **kwargs):  # noqa: D401 - jinja's hook
        _tick()
        if obj is _value:
            return _checked(args[0], charge=False) if args else None
        if obj is _loop:
            return super().call(context, obj, *args, **kwargs)
        if getattr(obj, "__name__", "") in _STR_JOIN_NAMES and isinstance(getattr(obj, "__self__", None), str):
            args = (_join_items(args[0], obj.__self__),) + args[1:] if args else args
        _check_str_method(obj, args, kwargs)
        return _checked(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        @functools.wraps(wrapped)
        def checked(*args, **kwargs):
            _check_brace_format(fmt)
            return _checked(wrapped(*args, **kwargs))

        return checked


def _check_multiply(left, right) -> None:
    if isinstance(left, int) and not isinstance(right, int):
        left, right = right, left
    if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, int):
        if right > 0:
            _size_ok(max(_weight(left), 1) * right, "repeating")
    elif isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        _need(bits <= MAX_INT_BITS, f"the number would have about {bits:,} bits (the limit is {MAX_INT_BITS:,})")


def _check_power(base, exponent) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = exponent * base.bit_length()
        _need(bits <= MAX_INT_BITS, f"the number would have about {bits:,} bits (the limit is {MAX_INT_BITS:,})")


_TEXT_ENV = _Environment(autoescape=False)
_HTML_ENV = _Environment(autoescape=True)


@functools.lru_cache(maxsize=512)
def _compile(html: bool, source: str):
    """Compiled template (thread-safe to render; compiling is the slow part)."""
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


# --- context -----------------------------------------------------------------------------------


def _blank_context() -> dict:
    context: dict = {}
    for key in VARIABLES:
        group, _, name = key.partition(".")
        if name:
            context.setdefault(group, {})[name] = 0 if name == "failure_count" else ""
        else:
            context[group] = ""
    context["reply_marker"] = REPLY_MARKER
    return context


def _plain(value):
    """Only plain values reach a template: strings, numbers, markup (for message.html)."""
    if value is None:
        return ""
    if isinstance(value, (Markup, str, bool, int, float)):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            return value.strftime("%Y-%m-%d %H:%M UTC")
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def template_context(context: Mapping) -> dict:
    """The context a template sees: the documented variables only, as plain values.

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
                values[name] = blank if value is None else _plain(value)
            result[group] = values
        elif given is not None and group != "reply_marker":
            result[group] = _plain(given)
    message = result["message"]
    html = message["html"]
    if html:
        from portal.mail.sanitize import sanitize_html

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
                   "url": "https://portal.harbor-it.example/tickets/T-1042"},
        "client": {"name": "Northwind Traders"},
        "contact": {"name": "Anna Müller", "email": "anna.mueller@northwind.example"},
        "assignee": {"name": "Sam Patel", "email": "sam.patel@harbor-it.example"},
        "message": {
            "text": "Hello,\n\nsince this morning the printer next to reception only prints blank pages.\n"
                    "We already restarted it.\n\nThanks,\nAnna",
            "html": "",
            "author": "Anna Müller",
            "date": dt.datetime(2024, 3, 5, 14, 20, tzinfo=dt.timezone.utc),
        },
        "msp": {"name": "Harbor IT"},
        "portal_url": "https://portal.harbor-it.example",
        "mailbox": {"address": "support@harbor-it.example",
                    "last_error": "could not connect to mail.harbor-it.example:993: connection refused",
                    "failure_count": 5},
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
    budget = _budget.get()
    try:
        template = _compile(html, source)
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


def inline_css(html: str) -> str:
    """Move <style> rules onto the elements (mail clients drop <style>); never fetches anything."""
    import css_inline

    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=False).inline(html)


def render(event_texts: tuple[str | None, str | None], context: Mapping, *,
           time_limit: float = RENDER_TIME_LIMIT) -> RenderedEmail:
    """Render (text_source, html_source) for one mail. Raises TemplateError; sends nothing.

    context: nested plain dicts as in sample_context(); see template_context() for what is kept.
    """
    text_source, html_source = (_normalize(s) for s in event_texts)
    if not text_source.strip() and not html_source.strip():
        raise TemplateError("the template is empty", None, "text")
    for source, part in ((text_source, "text"), (html_source, "html")):
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the template is longer than {MAX_TEMPLATE_CHARS:,} characters", None, part)
    values = template_context(context)
    token = _budget.set(_Budget(time_limit))
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
            _tick()
            try:
                html = inline_css(html)
            except Exception as exc:  # noqa: BLE001 - css-inline reports bad CSS as ValueError
                raise TemplateError(f"the CSS could not be inlined: {exc}", None, "html") from None
            if text is None:
                text = html_to_text(html)
        _tick()
    except LimitError as exc:
        raise TemplateError(str(exc), None, "html" if html_source else "text") from None
    finally:
        _budget.reset(token)
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
        token = _budget.set(_Budget(time_limit))
        try:
            for piece, is_html, offset in ((subject_source, False, 0), (body, html, 1)):
                try:
                    _render_one(piece, is_html, values, offset, part)
                except TemplateError as exc:
                    if exc.problem not in problems:
                        problems.append(exc.problem)
        finally:
            _budget.reset(token)
    return problems


def _unknown_names(source: str, offset: int, part: str) -> list[TemplateProblem]:
    """Top-level names used but neither documented nor set in the template (found without running it)."""
    try:
        tree = _TEXT_ENV.parse(source)
    except TemplateSyntaxError:
        return []  # reported when rendering
    known = {key.partition(".")[0] for key in VARIABLES} | set(_TEXT_ENV.globals)
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


@functools.lru_cache(maxsize=None)
def load_default(event: str) -> tuple[str, str]:
    """The built-in (text_source, html_source) of an event."""
    if event not in EVENTS:
        raise ValueError(f"unknown template event {event!r}; known: {', '.join(EVENTS)}")
    text = (DEFAULT_TEMPLATES_DIR / f"{event}.template").read_text(encoding="utf-8")
    html = (DEFAULT_TEMPLATES_DIR / f"{event}.html.template").read_text(encoding="utf-8")
    return text, html
