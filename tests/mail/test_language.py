"""The languages of customer mail (portal.mail.language) and the built-in templates in each."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from portal.mail.language import LANGUAGES, language_named, quote_header, written_time
from portal.mail.render import BUILTIN_VARIANTS, EVENTS, load_default, render, sample_context, validate_template
from portal.mail.threads import CUSTOMER_EVENTS

AT = datetime(2026, 3, 1, 8, 5, tzinfo=UTC)  # a Sunday


def test_the_first_known_language_wins_else_english():
    assert language_named(None, "", "xx", "de", "en") == "de"
    assert language_named(None, "fr") == "en" and language_named() == "en"


def test_dates_are_written_in_the_language_with_the_zone():
    assert written_time(AT, ZoneInfo("Europe/Berlin"), "de") == "Sonntag, 1. März 2026, 09:05 CET"
    assert written_time(AT, ZoneInfo("Europe/Berlin"), "en") == "2026-03-01 09:05 CET"
    assert quote_header("x", "Anna", "de") == "Am x schrieb Anna:" and quote_header("x", "Anna") == "On x, Anna wrote:"


@pytest.mark.parametrize("language", list(LANGUAGES))
@pytest.mark.parametrize("event, variant", [*((e, "") for e in EVENTS),
                                            *((e, v) for e, vs in BUILTIN_VARIANTS.items() for v in vs)])
def test_every_built_in_template_is_valid_in_every_language(event, variant, language):
    text, html = load_default(event, language, variant)
    assert validate_template(text, html) == []
    out = render((text, html), sample_context(), tz=ZoneInfo("Europe/Berlin"), language=language)
    assert out.subject.startswith("Re: [T-1042]") or event not in CUSTOMER_EVENTS
    if language == "de" and event in CUSTOMER_EVENTS:
        assert '<html lang="de">' in html and "Kind regards" not in out.text  # really translated
    if event == "ticket_created" and language == "de":
        assert "Dienstag, 5. März 2024, 15:21 CET" in out.text or variant == "short"


def test_the_alternatives_differ_from_the_standard_acknowledgement():
    standard, short, detailed = (render(load_default("ticket_created", "en", v), sample_context()).text
                                 for v in ("", "short", "detailed"))
    assert len(short) < len(standard) < len(detailed)
    assert "What happens next" in detailed and "since this morning the printer" in detailed
    with pytest.raises(ValueError):
        load_default("closed", "en", "short")


def test_mail_to_the_msps_own_people_stays_english():
    for event in ("alert", "mailbox_failing", "sign_in_expiring", "reconnect_needed"):
        assert event not in CUSTOMER_EVENTS and load_default(event, "de") == load_default(event, "en")


def test_status_and_priority_are_written_in_the_customers_language():
    context = sample_context()
    context["ticket"].update(status="waiting", priority="high")
    german = render(load_default("priority_changed", "de"), context, language="de")
    english = render(load_default("priority_changed", "en"), context, language="en")
    assert "hoch" in german.text and "wartet auf Ihre Antwort" in german.html and "high" not in german.text
    assert "high" in english.text and "hoch" not in english.text
    # A word the language has none for (a status added later) is written as stored, not dropped.
    context["ticket"].update(status="escalated")
    assert render(("{{ ticket.status }}\n{{ ticket.priority }}", None), context, language="de").text == "hoch\n"
    assert render(("s\n{{ ticket.status }}", None), context, language="de").text.strip() == "escalated"
