"""Outbound templates: the built-ins, the sandbox and its limits, errors with their lines."""
from __future__ import annotations

import datetime as dt
import pickle
import re
import threading
import time
from zoneinfo import ZoneInfo

import pytest

from portal.mail.refs import REPLY_MARKER
from portal.mail.render import (EVENTS, VARIABLES, RenderedEmail, TemplateError, TemplateProblem, load_default,
                                render, sample_context, template_context, validate_template)
from portal.mail.times import local_time, zone_named

# Mail to the mailbox's alert recipients: about a mailbox, not a ticket.
MAILBOX_EVENTS = ("mailbox_failing", "sign_in_expiring", "reconnect_needed")
# Mail to the staff about a ticket: a new one, an SLA warning or breach.
STAFF_EVENTS = ("alert", "sla_warning", "sla_breached")
CUSTOMER_EVENTS = [e for e in EVENTS if e not in (*STAFF_EVENTS, *MAILBOX_EVENTS)]


def _render_text(body: str, context=None, **kwargs) -> RenderedEmail:
    return render(("Subject\n" + body, None), sample_context() if context is None else context, **kwargs)


def _error(body: str, html: bool = False, **kwargs) -> TemplateError:
    source = "Subject\n" + body
    with pytest.raises(TemplateError) as info:
        render((None, source) if html else (source, None), sample_context(), **kwargs)
    return info.value


# --- built-in templates ------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS)
def test_builtin_renders_and_validates_clean(event):
    text_source, html_source = load_default(event)
    assert validate_template(text_source, html_source) == []
    out = render((text_source, html_source), sample_context())
    assert out.subject and "\n" not in out.subject
    assert out.text.strip() and out.html
    if event not in MAILBOX_EVENTS:
        assert "T-1042" in out.subject
    else:
        assert "support@harbor-it.example" in out.subject
    # Everything the sample knows shows up; nothing is left as template syntax.
    for rendered in (out.text, out.html):
        assert "{{" not in rendered and "{%" not in rendered


@pytest.mark.parametrize("event", EVENTS)
def test_builtin_html_is_mail_client_safe(event):
    html = render(load_default(event), sample_context()).html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "role=\"presentation\"" in html  # table layout
    # No remote images, no external style sheets, no scripts.
    assert not re.search(r"<img[^>]+src=[\"']https?:", html)
    assert "<link" not in html and "<script" not in html
    # The only <style> left is the kept dark-mode block; every rule is on the elements themselves.
    styles = re.findall(r"<style([^>]*)>(.*?)</style>", html, re.S)
    assert styles and all('data-css-inline="keep"' in attrs and "prefers-color-scheme: dark" in css
                          for attrs, css in styles)
    for tag in re.findall(r"<(?:p|td|h1)\b[^>]*class=[^>]*>", html):
        assert "style=" in tag, tag
    # Dark-mode safe: explicit colours, never pure white on pure black assumptions.
    assert "background-color:" in html
    lowered = html.lower()
    assert "#ffffff" not in lowered and "#000000" not in lowered


@pytest.mark.parametrize("event", CUSTOMER_EVENTS)
def test_customer_mail_starts_with_the_reply_marker(event):
    out = render(load_default(event), sample_context())
    assert out.text.startswith(REPLY_MARKER + "\n")
    body = out.html.split("<body", 1)[1]
    assert body.index(REPLY_MARKER) < body.index("T-1042")


@pytest.mark.parametrize("event", EVENTS)
def test_builtin_renders_with_an_empty_context(event):
    out = render(load_default(event), {})
    assert out.text and out.html


def test_variables_are_documented_and_all_in_the_sample():
    assert all(description.strip() for description in VARIABLES.values())
    values = template_context(sample_context())
    for key in VARIABLES:
        group, _, name = key.partition(".")
        value = values[group][name] if name else values[group]
        assert value not in ("", None), key


# --- rendering -------------------------------------------------------------------------------


def test_first_line_is_the_subject_and_whitespace_is_folded():
    out = render(("  [{{ ticket.reference }}]\t{{ ticket.subject }}  \nHello {{ contact.name }}\n", None),
                 sample_context())
    assert out.subject == "[T-1042] Printer on the 2nd floor prints blank pages"
    assert out.text == "Hello Anna Müller\n"
    assert out.html is None


def test_subject_cannot_break_into_headers():
    context = sample_context()
    context["ticket"]["subject"] = "Hi\r\nBcc: victim@example.com"
    out = render(load_default("ticket_created"), context)
    assert "\n" not in out.subject and "\r" not in out.subject


def test_html_is_escaped_text_is_not():
    context = sample_context()
    context["contact"]["name"] = "<script>alert(1)</script> & Co"
    out = render(("S\nHi {{ contact.name }}", "S\n<p>Hi {{ contact.name }}</p>"), context)
    assert "<script>alert(1)</script> & Co" in out.text
    assert "&lt;script&gt;" in out.html and "<script>" not in out.html


def test_message_html_is_cleaned_and_not_escaped_twice():
    context = sample_context()
    context["message"]["html"] = '<p onclick="x()">Hi <b>there</b></p><script>bad()</script>'
    out = render((None, "S\n<div>{{ message.html }}</div>"), context)
    assert "<b>there</b>" in out.html
    assert "onclick" not in out.html and "bad()" not in out.html
    # The text part is derived from the HTML when there is no text template.
    assert "Hi there" in out.text


def test_html_only_template_gets_a_text_part():
    out = render((None, "Re: {{ ticket.subject }}\n<style>p{color:#223344}</style><p>Hello {{ contact.name }}</p>"),
                 sample_context())
    assert out.subject == "Re: Printer on the 2nd floor prints blank pages"
    assert out.text.strip() == "Hello Anna Müller"
    assert '<p style="color: #223344;">' in out.html and "<style" not in out.html


def test_subject_of_html_template_is_not_html_escaped():
    context = sample_context()
    context["ticket"]["subject"] = "R&D <lab>"
    out = render((None, "{{ ticket.subject }}\n<p>x</p>"), context)
    assert out.subject == "R&D <lab>"


def test_only_documented_variables_reach_the_template():
    context = sample_context()
    context["secret_key"] = "hunter2"
    context["ticket"]["internal_notes"] = "do not show"
    with pytest.raises(TemplateError, match="unknown variable 'secret_key'"):
        render(("S\n{{ secret_key }}", None), context)
    with pytest.raises(TemplateError, match="unknown variable 'ticket.internal_notes'"):
        render(("S\n{{ ticket.internal_notes }}", None), context)


def test_objects_become_plain_strings():
    class Model:
        password = "hunter2"

        def __str__(self):
            return "a model"

    context = sample_context()
    context["ticket"]["subject"] = Model()
    assert _render_text("{{ ticket.subject }}", context).text == "a model\n"
    with pytest.raises(TemplateError):
        _render_text("{{ ticket.subject.password }}", context)


def test_missing_values_render_empty_and_dates_are_text():
    out = _render_text("[{{ assignee.name }}] {{ message.date }}", {"message": {"date": None}})
    assert out.text == "[]\n"
    out = _render_text("{{ message.date }}")
    assert out.text == "2024-03-05 14:20 UTC\n"


def test_times_read_in_the_zone_given_with_its_abbreviation():
    """The client's zone comes in as `tz`; winter and summer time each get their own name."""
    berlin = ZoneInfo("Europe/Berlin")
    out = _render_text("{{ message.date }} / {{ ticket.created }}", tz=berlin)
    assert out.text == "2024-03-05 15:20 CET / 2024-03-05 15:21 CET\n"
    context = sample_context()
    context["message"]["date"] = dt.datetime(2024, 7, 5, 14, 20)  # naive: taken as UTC, as the database keeps it
    assert _render_text("{{ message.date }}", context, tz=berlin).text == "2024-07-05 16:20 CEST\n"
    assert _render_text("{{ message.date }}", tz=ZoneInfo("America/Sao_Paulo")).text == "2024-03-05 11:20 -03\n"


def test_a_zone_name_is_the_first_the_system_knows():
    assert zone_named(None, "", "Mars/Olympus_Mons", "Asia/Tokyo", "Europe/Berlin") == ZoneInfo("Asia/Tokyo")
    assert zone_named(None, "../etc/passwd") == ZoneInfo("UTC")
    assert local_time(dt.datetime(2024, 3, 5, 23, 30, tzinfo=dt.timezone.utc), ZoneInfo("Asia/Tokyo")) == \
        "2024-03-06 08:30 JST"


# --- errors with their lines -------------------------------------------------------------------


def test_unknown_variable_is_reported_with_its_line():
    error = _error("line 2\nline 3\n{{ ticcket.reference }}")
    assert error.line == 4 and error.part == "text"
    assert "unknown variable 'ticcket'" in error.message


def test_unknown_attribute_is_reported_with_its_line():
    error = _error("\n\n{{ ticket.refrence }}", html=True)
    assert (error.line, error.part) == (4, "html")
    assert "unknown variable 'ticket.refrence'" in error.message


def test_syntax_error_is_reported_with_its_line():
    error = _error("fine\n{% if ticket.status == 'open' %}\nopen\n")
    assert error.line is not None and error.line >= 3
    assert error.message.startswith("syntax error")
    error = _error("ok\n{{ ticket.subject }\n")
    assert error.line == 3


def test_error_in_the_subject_line_is_line_one():
    with pytest.raises(TemplateError) as info:
        render(("Re: {{ tikcet.subject }}\nbody", None), sample_context())
    assert info.value.line == 1


def test_validate_reports_every_problem_with_lines():
    text = "{{ ticket.subject }}\nHello {{ nmae }}\n{{ contact.name }}\n{{ othr }}\n"
    html = "Subject\n<p>\n{% for x in ticket %}\n"
    problems = validate_template(text, html)
    assert TemplateProblem(2, "unknown variable 'nmae'", "text") in problems
    assert TemplateProblem(4, "unknown variable 'othr'", "text") in problems
    html_problems = [p for p in problems if p.part == "html"]
    assert len(html_problems) == 1 and html_problems[0].message.startswith("syntax error")
    assert html_problems[0].line >= 3


def test_validate_accepts_local_names_and_loops():
    text = ("{{ ticket.subject }}\n{% set greeting = 'Hi' %}{{ greeting }}\n"
            "{% for word in ticket.subject.split() %}{{ loop.index }}{{ word }}{% endfor %}\n"
            "{% macro sig(name) %}{{ name }}{% endmacro %}{{ sig(msp.name) }}\n")
    assert validate_template(text, None) == []


def test_validate_empty_template_and_empty_subject():
    assert validate_template("", None)[0].message.startswith("the template is empty")
    assert validate_template("\nbody", None) == [TemplateProblem(1, "the first line is the subject and must "
                                                                    "not be empty", "text")]


def test_template_error_pickles_with_its_line():
    error = _error("\n{{ nope }}")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.line, copy.message, copy.part) == (error.line, error.message, error.part)


# --- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "{{ ticket.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['os'] }}",
    "{{ ticket.update({'status': 'closed'}) }}",
    "{{ ticket.clear() }}",
])
def test_internals_are_out_of_reach(body):
    error = _error(body)
    assert error.message.startswith("not allowed") or "unknown variable" in error.message
    assert error.line == 2


def test_no_globals_beyond_the_safe_ones():
    for name in ("lipsum", "config", "request", "os", "__builtins__", "range_"):
        assert "unknown variable" in _error("{{ %s }}" % name).message


def _fast_error(body: str) -> TemplateError:
    started = time.monotonic()
    error = _error(body)
    assert time.monotonic() - started < 1.0, "the limit must stop the work before it is done"
    assert error.line == 2
    return error


def test_huge_string_repetition_is_refused():
    assert "repeating" in _fast_error("{{ 'a' * 10**9 }}").message
    assert "repeating" in _fast_error("{{ 10**9 * 'a' }}").message
    assert "repeating" in _fast_error("{{ ['x'] * 10**9 }}").message


def test_huge_powers_and_products_are_refused():
    assert "bits" in _fast_error("{{ 2 ** (10 ** 8) }}").message
    assert "bits" in _fast_error("{% set x = 7 ** 1000 %}{{ x * x * x * x * x }}").message


def test_huge_ranges_are_refused():
    assert "range" in _fast_error("{% for i in range(10**9) %}x{% endfor %}").message
    assert "range" in _fast_error("{{ range(10**9)|list|length }}").message


def test_padding_and_format_widths_are_refused():
    for body in ("{{ 'a'|center(10**9) }}", "{{ 'a'.center(10**9) }}", "{{ 'a'.ljust(10**9) }}",
                 "{{ '%0999999999d'|format(1) }}", "{{ '%999999999d' % 1 }}", "{{ '{:>999999999}'.format(1) }}",
                 "{{ 'x'|indent(10**9) }}"):
        _fast_error(body)


def test_growth_by_doubling_is_refused():
    doubling = "{% set s = 'abcdefghij' %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}"
    assert "larger than" in _fast_error(doubling).message
    namespace = ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{{ ns.s|length }}")
    _fast_error(namespace)
    nested = ("{% set s = 'x' * 100000 %}{% set a = [s,s,s,s,s,s,s,s,s,s] %}"
              "{% set b = [a,a,a,a,a,a,a,a,a,a] %}{{ b|string|length }}")
    _fast_error(nested)
    _fast_error("{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}")
    _fast_error("{% set s = 'x' * 900000 %}{{ s.join(('a,' * 1000).split(',')) }}")


def test_buffered_output_is_counted():
    # A macro's output is collected before it is returned: it must not grow without bound.
    body = ("{% set s = 'x' * 900000 %}{% macro m() %}{% for i in range(10000) %}{{ s }}{% endfor %}"
            "{% endmacro %}{{ m()|length }}")
    assert "too much" in _fast_error(body).message
    assert "too much" in _fast_error("{{ range(10000)|map('center', 900000)|list|length }}").message


def test_output_size_is_capped():
    # The whole output, not one line, is too long: no line number to give.
    started = time.monotonic()
    error = _error("{% set s = 'x' * 500000 %}{{ s }}{{ s }}{{ s }}")
    assert "produces more than 1,000,000 characters" in error.message
    assert time.monotonic() - started < 1.0


def test_loops_are_capped():
    error = _fast_error("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}")
    assert "loops too often" in error.message


def test_time_limit_stops_exponential_recursion():
    # 2**40 macro calls, no loop and no big value: only the clock can stop it.
    body = "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    started = time.monotonic()
    error = _error(body, time_limit=0.3)
    elapsed = time.monotonic() - started
    assert "took longer than 0.3 seconds" in error.message
    assert 0.3 <= elapsed < 1.5


def test_time_limit_works_outside_the_main_thread():
    body = "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    outcome = {}

    def worker():
        started = time.monotonic()
        try:
            render(("S\n" + body, None), sample_context(), time_limit=0.3)
        except TemplateError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert "took longer" in outcome["error"].message and outcome["elapsed"] < 1.5


def test_default_time_limit_is_real():
    body = "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    started = time.monotonic()
    error = _error(body)
    assert "took longer than 2 seconds" in error.message
    assert time.monotonic() - started < 3.5


def test_limits_in_validation_are_reported_with_the_line():
    problems = validate_template("S\nfine\n{{ 'a' * 10**9 }}\n", None)
    assert len(problems) == 1 and problems[0].line == 3 and "repeating" in problems[0].message


def test_ordinary_template_features_still_work():
    body = ("{% for w in ticket.subject.split()[:3] %}{{ loop.index }}.{{ w|upper }} {% endfor %}|"
            "{{ '%s-%03d'|format('T', 7) }}|{{ '{}+{}'.format(1, 2) }}|{{ 2 ** 10 }}|{{ 'ab' * 3 }}|"
            "{{ [1, 2, 3]|join(',') }}|{{ contact.name|default('there') }}|{{ ticket.subject|truncate(12) }}")
    out = _render_text(body)
    assert out.text == ("1.PRINTER 2.ON 3.THE |T-007|1+2|1024|ababab|1,2,3|Anna Müller|Printer...\n")


def test_the_sign_in_alerts_say_what_expires_when_and_why_to_reconnect():
    expiring = render(load_default("sign_in_expiring"), sample_context())
    assert expiring.subject == "The client secret of support@harbor-it.example expires on 2024-03-19"
    assert "in 14 days" in expiring.text and "Create a new client secret" in expiring.text
    context = sample_context()
    context["mailbox"] = {**context["mailbox"], "expiring": "sign-in grant", "days_left": 1}
    grant = render(load_default("sign_in_expiring"), context)
    assert "in 1 day." in grant.text and "Connect the mailbox again" in grant.text
    assert "Connect the mailbox again" in grant.html and "client secret" not in grant.html
    reconnect = render(load_default("reconnect_needed"), sample_context())
    assert reconnect.subject == "Mailbox support@harbor-it.example must be connected again"
    assert "AADSTS7000222" in reconnect.text and "AADSTS7000222" in reconnect.html
