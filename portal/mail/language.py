"""The languages a client's customer-facing mail can be written in, and the few words the
product writes into that mail itself (dates, the "On …, X wrote:" line above a quote). The
built-in templates of each language sit in default_templates/<code>/ (English at the top).

Pure: the language is passed in; nothing here knows clients or requests.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from portal.mail.times import as_utc, local_time

DEFAULT_LANGUAGE = "en"
# Only languages the built-in templates and the words below are really written in.
LANGUAGES: dict[str, str] = {"en": "English", "de": "German (Deutsch)"}

_MONTHS = {"de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
                  "November", "Dezember")}
_WEEKDAYS = {"de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")}
# A ticket's status and priority as the customer's mail writes them (the stored values are English).
_TICKET_WORDS = {"de": {"new": "neu", "open": "offen", "waiting": "wartet auf Ihre Antwort", "resolved": "gelöst",
                        "closed": "geschlossen", "archived": "archiviert", "merged": "zusammengeführt",
                        "split": "aufgeteilt", "low": "niedrig", "normal": "normal", "high": "hoch"}}


def language_named(*codes: str | None) -> str:
    """The first of `codes` this product speaks, else English. Empty codes are skipped (not set:
    the next one is in effect), and so are codes it does not (or no longer) speak."""
    return next((code for code in codes if code in LANGUAGES), DEFAULT_LANGUAGE)


def written_time(value: datetime, tz: tzinfo, language: str = DEFAULT_LANGUAGE) -> str:
    """A moment as the customer's mail writes it, in the zone `tz`: English keeps the portal's
    form (2024-03-05 15:20 CET); German names the day and month (Dienstag, 5. März 2024, 15:20 CET)."""
    if language not in _MONTHS:
        return local_time(value, tz)
    at = as_utc(value).astimezone(tz)
    return (f"{_WEEKDAYS[language][at.weekday()]}, {at.day}. {_MONTHS[language][at.month - 1]} {at.year}, "
            f"{at:%H:%M %Z}")


def ticket_word(value: str, language: str = DEFAULT_LANGUAGE) -> str:
    """A status or priority (`open`, `high`) in `language`; a value it has no word for stays as it is."""
    return _TICKET_WORDS.get(language, {}).get(value, value)


def quote_header(at: str, who: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The line above a quoted message in a reply (plain text: the caller escapes it)."""
    if language == "de":
        return f"Am {at} schrieb {who}:"
    return f"On {at}, {who} wrote:"
