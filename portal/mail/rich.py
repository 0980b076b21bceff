"""Rich-text templates: one body written in the editor, from which both parts are made.

A rich-text template is a subject line and a body: an HTML fragment from the composer's editor
with `{{ variables }}` (and, for those who want them, Jinja blocks) in its text. Sending it:

- the body renders in the same sandbox as the raw sources (autoescape on: a variable's value is
  text, never markup; only message.html, already cleaned, stays HTML), then is sanitised;
- the HTML part is the body inside the MSP's layout (CSS, header, footer), CSS inlined as for
  the raw HTML templates (@media rules, e.g. dark mode, are kept in a <style>);
- the text part is the same rendered header, body and footer turned into text by html_to_text.

The raw sources (text_source, html_source) remain for experts; TemplateTexts holds either kind
and render_texts/validate_texts pick the way. Nothing here imports Flask, SQLAlchemy or RQ.
"""
from __future__ import annotations

import functools
import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import tzinfo

from portal.mail.html_body import html_to_text
from portal.mail.language import DEFAULT_LANGUAGE
from portal.mail.render import (
    DEFAULT_TEMPLATES_DIR,
    MAX_TEMPLATE_CHARS,
    RENDER_TIME_LIMIT,
    RenderedEmail,
    TemplateError,
    TemplateProblem,
    _clean_subject,
    _clean_text,
    _normalize,
    _render_one,
    _split,
    _unknown_names,
    inline_css,
    render,
    sample_context,
    template_context,
    validate_template,
)
from portal.mail.sandbox import Budget, LimitError, current_budget, tick
from portal.mail.sanitize import sanitize_html
from portal.mail.times import UTC

MAX_LAYOUT_CHARS = 50_000


@dataclass(frozen=True)
class Layout:
    """An MSP's frame for rich-text mail: CSS, and a header and footer (HTML with variables)."""

    css: str = ""
    header: str = ""
    footer: str = ""


@dataclass(frozen=True)
class TemplateTexts:
    """What one template is made of: a subject and rich-text body, or the two raw sources."""

    text_source: str | None = None
    html_source: str | None = None
    subject: str | None = None
    body: str | None = None

    @property
    def rich(self) -> bool:
        return self.body is not None


@functools.lru_cache(maxsize=1)
def default_layout() -> Layout:
    """The built-in layout: the look of the built-in HTML templates."""
    css, header, footer = ((DEFAULT_TEMPLATES_DIR / name).read_text(encoding="utf-8")
                           for name in ("layout.css", "layout.header.html", "layout.footer.html"))
    return Layout(css=css, header=header.strip(), footer=footer.strip())


def layout_document(title: str, layout_css: str, header: str, body: str, footer: str) -> str:
    """The HTML document around a body. Used with rendered pieces when sending, and with the
    Jinja sources when a rich-text template is turned into raw sources for the expert editor."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        '<meta name="supported-color-schemes" content="light dark">\n'
        f"<title>{title}</title>\n<style>\n{layout_css}\n</style>\n</head>\n<body>\n"
        '<table role="presentation" class="outer" width="100%" cellpadding="0" cellspacing="0" border="0">\n'
        '<tr><td align="center" style="padding: 24px 12px;">\n'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0"'
        ' style="width: 100%; max-width: 600px;">\n'
        + (f'<tr><td class="header">{header}</td></tr>\n' if header.strip() else "")
        + f'<tr><td class="card">\n{body}\n</td></tr>\n'
        + (f'<tr><td class="footer">{footer}</td></tr>\n' if footer.strip() else "")
        + "</table>\n</td></tr>\n</table>\n</body>\n</html>\n"
    )


# The editor writes HTML: inside {{ }} and {% %} its entities (&gt;, &quot;, &nbsp;) are Jinja's
# characters again.
_JINJA_SPAN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def jinja_body(body: str | None) -> str:
    return _JINJA_SPAN.sub(lambda m: html_lib.unescape(m.group(0)).replace("\xa0", " "), _normalize(body))


def clean_body(body: str | None) -> str:
    """A body as stored: sanitised like any HTML from the editor (scripts, on* attributes,
    javascript: links go); the {{ variables }} in its text stay as written."""
    return sanitize_html(_normalize(body)).strip()


def text_to_body(text: str | None) -> str:
    """Plain text (with its {{ variables }}) as a body: one block per line, HTML escaped."""
    lines = _normalize(text).strip("\n").split("\n")
    return "".join(f"<div>{html_lib.escape(line, quote=False) or '<br>'}</div>" for line in lines if lines != [""])


def starter_from_sources(text_source: str | None, html_source: str | None) -> tuple[str, str]:
    """A subject and body for the simple editor from raw sources (the built-in default, an
    inherited or the client's own template): the plain-text variant's lines, the reply marker
    left to the layout's header, message.text as message.html."""
    source = _normalize(text_source)
    if not source.strip():
        subject, html_body = _split(_normalize(html_source))
        source = subject + "\n" + html_to_text(html_body)
    subject, text = _split(source)
    lines = [line for line in text.split("\n") if line.strip() != "{{ reply_marker }}"]
    text = "\n".join(lines).replace("{{ message.text }}", "{{ message.html }}")
    return subject.strip(), text_to_body(text)


def sources_from_rich(subject: str | None, body: str | None, layout: Layout) -> tuple[str, str]:
    """Raw sources that send what a rich-text template sends (for the expert editor)."""
    subject = _normalize(subject).replace("\n", " ")
    body = jinja_body(body)
    text = html_to_text(body)
    html = layout_document("{{ ticket.subject or msp.name }}", layout.css, layout.header, body, layout.footer)
    return f"{subject}\n{text}\n", f"{subject}\n{html}"


# --- rendering ---------------------------------------------------------------------------------


def _check_sizes(subject: str, body: str, layout: Layout) -> None:
    if not body.strip():
        raise TemplateError("the body is empty: write the email in the editor", None, "body")
    if len(body) > MAX_TEMPLATE_CHARS or len(subject) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is longer than {MAX_TEMPLATE_CHARS:,} characters", None, "body")
    if max(len(layout.css), len(layout.header), len(layout.footer)) > MAX_LAYOUT_CHARS:
        raise TemplateError(f"a part of the layout is longer than {MAX_LAYOUT_CHARS:,} characters", None, "layout")


def render_rich(subject: str | None, body: str | None, layout: Layout, context: Mapping, *,
                time_limit: float = RENDER_TIME_LIMIT, tz: tzinfo = UTC,
                language: str = DEFAULT_LANGUAGE) -> RenderedEmail:
    """Both parts of a rich-text template, times in `tz` (the client's zone). Raises TemplateError
    (part subject, body or layout)."""
    subject_source, body_source = _normalize(subject).replace("\n", " "), jinja_body(body)
    _check_sizes(subject_source, body_source, layout)
    values = template_context(context, tz, language)
    token = current_budget.set(Budget(time_limit))
    try:
        subject_text = _clean_subject(_render_one(subject_source, False, values, 0, "subject"))
        inner = sanitize_html(_render_one(body_source, True, values, 0, "body"))
        header = _render_one(_normalize(layout.header), True, values, 0, "layout")
        footer = _render_one(_normalize(layout.footer), True, values, 0, "layout")
        document = layout_document(html_lib.escape(subject_text), layout.css, header, inner, footer)
        tick()
        try:
            html = inline_css(document, keep_at_rules=True)
        except Exception as exc:  # noqa: BLE001 - css-inline reports bad CSS as ValueError
            raise TemplateError(f"the layout's CSS could not be inlined: {exc}", None, "layout") from None
        text = "\n\n".join(t for t in (html_to_text(p) for p in (header, inner, footer)) if t.strip())
        tick()
    except LimitError as exc:
        raise TemplateError(str(exc), None, "body") from None
    finally:
        current_budget.reset(token)
    return RenderedEmail(subject=subject_text, text=_clean_text(text), html=html)


def validate_rich(subject: str | None, body: str | None, layout: Layout, *,
                  time_limit: float = RENDER_TIME_LIMIT) -> list[TemplateProblem]:
    """Problems for the simple editor: an empty subject or body, unknown variables (in every
    branch), then whatever rendering the sample ticket finds (in the body or the layout)."""
    subject_source, body_source = _normalize(subject).replace("\n", " "), jinja_body(body)
    problems: list[TemplateProblem] = []
    if not subject_source.strip():
        problems.append(TemplateProblem(None, "the subject must not be empty", "subject"))
    problems.extend(_unknown_names(subject_source, 0, "subject"))
    problems.extend(_unknown_names(body_source, 0, "body"))
    for piece in (layout.header, layout.footer):
        problems.extend(_unknown_names(_normalize(piece), 0, "layout"))
    if problems:
        return problems
    try:
        render_rich(subject_source, body_source, layout, sample_context(), time_limit=time_limit)
    except TemplateError as exc:
        problems.append(exc.problem)
    return problems


def render_texts(texts: TemplateTexts, layout: Layout | None, context: Mapping, *,
                 time_limit: float = RENDER_TIME_LIMIT, tz: tzinfo = UTC,
                 language: str = DEFAULT_LANGUAGE) -> RenderedEmail:
    """A template of either kind, rendered for one mail (layout: the MSP's, for rich text; tz and
    language: the zone and language of the client the mail is for)."""
    if texts.rich:
        return render_rich(texts.subject, texts.body, layout or default_layout(), context, time_limit=time_limit,
                           tz=tz, language=language)
    return render((texts.text_source, texts.html_source), context, time_limit=time_limit, tz=tz, language=language)


def validate_texts(texts: TemplateTexts, layout: Layout | None) -> list[TemplateProblem]:
    if texts.rich:
        return validate_rich(texts.subject, texts.body, layout or default_layout())
    return validate_template(texts.text_source, texts.html_source)


def validate_layout(layout: Layout) -> list[TemplateProblem]:
    """A layout's problems, found by sending a sample rich-text mail through it."""
    return [replace(p, part="layout") for p in validate_rich("Sample", "<p>{{ ticket.subject }}</p>", layout)]
