"""Rich-text templates: one body, both parts, inside an MSP's layout (portal/mail/rich.py)."""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest

from portal.mail.refs import REPLY_MARKER
from portal.mail.render import EVENTS, TemplateError, load_default, render, sample_context
from portal.mail.rich import (Layout, TemplateTexts, clean_body, default_layout, render_rich, render_texts,
                              sources_from_rich, starter_from_sources, validate_layout, validate_rich)

LAYOUT = Layout(css=".card { color: #123456; } p { margin: 0 0 9px 0; }\n"
                "@media (prefers-color-scheme: dark) { .card { color: #eeeeee !important; } }",
                header="<b>{{ msp.name }} support</b>", footer="Ticket {{ ticket.reference }}")
BODY = "<p>Hello {{ contact.name }},</p><p>we have <b>your</b> request {{ ticket.reference }}.</p>"


def test_one_body_makes_both_parts_inside_the_layout():
    mail = render_rich("[{{ ticket.reference }}] {{ ticket.subject }}", BODY, LAYOUT, sample_context())
    assert mail.subject == "[T-1042] Printer on the 2nd floor prints blank pages"
    assert "Hello Anna Müller," in mail.html and "<b>your</b> request T-1042" in mail.html
    assert "Hello Anna Müller," in mail.text and "your request T-1042." in mail.text
    # The layout: its header and footer in both parts, its CSS moved onto the elements, @media kept.
    assert mail.text.startswith("Harbor IT support\n") and mail.text.rstrip().endswith("Ticket T-1042")
    assert "<b>Harbor IT support</b>" in mail.html and "Ticket T-1042" in mail.html
    assert 'class="card" style="color: #123456;"' in mail.html
    assert '<p style="margin: 0 0 9px 0;">Hello' in mail.html
    assert "@media (prefers-color-scheme: dark)" in mail.html and ".card { color: #123456; }" not in mail.html
    assert "<" not in mail.text


def test_variables_cannot_inject_html_into_the_body():
    context = sample_context()
    context["ticket"] = {**context["ticket"], "subject": '<img src=x onerror="alert(1)">Bold</b>'}
    context["contact"] = {"name": "<script>alert(2)</script>Eve"}
    mail = render_rich("{{ ticket.subject }}", "<p>{{ ticket.subject }} / {{ contact.name }}</p>", LAYOUT, context)
    assert "<img" not in mail.html and "<script" not in mail.html
    assert not re.search(r"<[^>]*onerror", mail.html)  # as text only, never an attribute
    assert "&lt;img src=x onerror=" in mail.html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;Eve" in mail.html
    assert "<script>alert(2)</script>Eve" in mail.text  # the text part says what was written
    assert mail.subject == '<img src=x onerror="alert(1)">Bold</b>'  # a subject is text, never HTML


def test_the_body_is_sanitised_when_stored_and_when_rendered():
    hostile = ('<p onclick="steal()" onmouseover="x()">Hi {{ ticket.reference }}</p><script>alert(1)</script>'
               '<a href="javascript:alert(3)">link</a><img src="https://tracker.example/p.gif">')
    stored = clean_body(hostile)
    assert "onclick" not in stored and "onmouseover" not in stored and "<script" not in stored
    assert "javascript:" not in stored and "tracker.example" not in stored and "Hi {{ ticket.reference }}" in stored
    # A body that reached the database unclean is still sent clean.
    mail = render_rich("Hi", hostile, LAYOUT, sample_context())
    for bad in ("onclick", "onmouseover", "<script", "alert(1)", "javascript:", "tracker.example"):
        assert bad not in mail.html
    assert "Hi T-1042" in mail.html


def test_message_html_stays_html_and_the_editors_entities_are_jinja_again():
    context = sample_context()
    context["message"] = {**context["message"], "html": "<p>It <i>still</i> fails</p>", "text": ""}
    body = "<div>{% if ticket.priority != &quot;high&quot; %}Calm&nbsp;{{&nbsp;ticket.priority&nbsp;}}{% endif %}</div>" \
           "<blockquote>{{ message.html }}</blockquote>"
    mail = render_rich("Re", body, LAYOUT, context)
    assert "Calm normal" in mail.text.replace("\xa0", " ")
    assert "<i>still</i>" in mail.html and "It still fails" in mail.text


def test_problems_name_the_part_and_line():
    problems = validate_rich("Hi {{ nope }}", "<p>one</p>\n<p>{{ ticket.refrence }}{{ whoever }}</p>", LAYOUT)
    assert [(p.part, p.line, p.message) for p in problems] == [
        ("subject", 1, "unknown variable 'nope'"), ("body", 2, "unknown variable 'whoever'")]
    attribute = validate_rich("Hi", "<p>one</p>\n<p>{{ ticket.refrence }}</p>", LAYOUT)
    assert [(p.part, p.line) for p in attribute] == [("body", 2)] and "ticket.refrence" in attribute[0].message
    assert [p.part for p in validate_rich("", "<p>x</p>", LAYOUT)] == ["subject"]
    with pytest.raises(TemplateError, match="the body is empty"):
        render_rich("Hi", "  ", LAYOUT, sample_context())
    assert validate_layout(Layout(footer="{{ mailbox.nope }}"))[0].part == "layout"
    assert validate_layout(LAYOUT) == []


def test_both_kinds_read_their_times_in_the_zone_given():
    """The client's zone reaches a rich-text template (subject, body, layout) as a raw one."""
    tokyo = ZoneInfo("Asia/Tokyo")
    rich = render_texts(TemplateTexts(subject="At {{ message.date }}", body="<p>Opened {{ ticket.created }}</p>"),
                        Layout("", "<p>{{ message.date }}</p>", ""), sample_context(), tz=tokyo)
    assert rich.subject == "At 2024-03-05 23:20 JST" and "Opened 2024-03-05 23:21 JST" in rich.text
    assert "<p>2024-03-05 23:20 JST</p>" in rich.html and "UTC" not in rich.html
    raw = render_texts(TemplateTexts(text_source="S\n{{ message.date }}\n"), None, sample_context(), tz=tokyo)
    assert raw.text == "2024-03-05 23:20 JST\n"


def test_render_texts_picks_rich_or_raw():
    rich = render_texts(TemplateTexts(subject="S {{ ticket.reference }}", body="<p>B</p>"), LAYOUT, sample_context())
    raw = render_texts(TemplateTexts(text_source="S {{ ticket.reference }}\nB\n"), LAYOUT, sample_context())
    assert rich.subject == raw.subject == "S T-1042"
    assert rich.html is not None and "Harbor IT support" in rich.text
    assert raw.html is None and raw.text == "B\n"


def test_default_layout_looks_like_the_built_in_html_templates():
    """The built-in layout carries the card, marker and footer look of the built-in HTML mail."""
    default_html = render(load_default("closed"), sample_context()).html
    subject, body = starter_from_sources(*load_default("closed"))
    mail = render_rich(subject, body, default_layout(), sample_context())
    card_style = 'style="background-color: #fbfcfd;border: 1px solid #d5dbe2;border-radius: 6px;padding: 24px 28px;'
    assert card_style in default_html and card_style in mail.html
    assert f">{REPLY_MARKER}</td>" in mail.html and mail.text.startswith(REPLY_MARKER)
    assert "Harbor IT · ticket T-1042</td>" in mail.html and "background-color: #eef1f4" in mail.html


@pytest.mark.parametrize("event", EVENTS)
def test_every_built_in_template_converts_to_a_clean_simple_body(event):
    subject, body = starter_from_sources(*load_default(event))
    assert validate_rich(subject, body, default_layout()) == []
    mail = render_rich(subject, body, default_layout(), sample_context())
    raw = render(load_default(event), sample_context())
    assert mail.subject == raw.subject
    assert "{{" not in body.replace("{{ ", "").replace(" }}", "") or "{%" in body  # variables as typed


def test_a_rich_template_as_raw_sources_sends_the_same_words():
    text_source, html_source = sources_from_rich("Hi {{ ticket.reference }}", BODY, LAYOUT)
    raw = render((text_source, html_source), sample_context())
    rich = render_rich("Hi {{ ticket.reference }}", BODY, LAYOUT, sample_context())
    assert raw.subject == rich.subject
    assert "your request T-1042." in raw.text and "<b>your</b> request T-1042" in raw.html
    assert 'class="card" style="color: #123456;"' in raw.html
