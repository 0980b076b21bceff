"""The Jinja2 environment outbound templates render in: the immutable sandbox, plus a budget per
render that every loop iteration, literal, concatenation, filter, call, operator and output is
checked against (the limits below). What the caps promise is listed in portal/mail/render.py.

Nothing here imports Flask, SQLAlchemy or RQ.
"""
from __future__ import annotations

import contextvars
import functools
import html as html_lib
import re
import string
import time

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

MAX_VALUE_CHARS = 1_000_000
MAX_WORK_CHARS = 20_000_000
MAX_LOOP_ITERATIONS = 100_000
MAX_RANGE = 10_000
MAX_INT_BITS = 4096
MAX_FORMAT_WIDTH = 10_000


class LimitError(SecurityError):
    """The template tried to compute more than it may."""


# --- the per-render budget -------------------------------------------------------------------


class Budget:
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


current_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("tidemark_render_budget", default=None)


def tick() -> None:
    budget = current_budget.get()
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
    budget = current_budget.get()
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
        tick()
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
    budget = current_budget.get()
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
        budget = current_budget.get()
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
        tick()
        return value

    def _parse(self, source, name, filename):
        return _Guard().visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator, left, right):
        tick()
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
        tick()
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


TEXT_ENV = _Environment(autoescape=False)
_HTML_ENV = _Environment(autoescape=True)


@functools.lru_cache(maxsize=512)
def compile_template(html: bool, source: str):
    """Compiled template (thread-safe to render; compiling is the slow part)."""
    return (_HTML_ENV if html else TEXT_ENV).from_string(source)
