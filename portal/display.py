"""How values read on a page: times in the viewer's time zone, form errors."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask_login import current_user
from markupsafe import Markup

from portal.mail.times import UTC, as_utc, local_time, utc_time, zone_named


def viewer_timezone() -> ZoneInfo:
    """The signed-in user's own time zone ("My settings"), else their MSP's, else UTC."""
    if current_user and current_user.is_authenticated:
        return zone_named(current_user.timezone, current_user.msp.timezone)
    return UTC


def duration(amount: timedelta | int) -> str:
    """A span of business time (or a number of minutes) as "2 h 05 min": days are business
    days of unequal length, so hours are not folded into them."""
    minutes = int(abs(amount).total_seconds() // 60) if isinstance(amount, timedelta) else abs(int(amount))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def when(value: datetime | None) -> Markup | str:
    """A moment on a page (the `when` filter, the one way pages show a time): in the viewer's
    zone with its abbreviation, the same moment in UTC as the title, machine-readable in
    `datetime`. "never" when there is none."""
    if value is None:
        return "never"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ"), utc_time(value), local_time(value, viewer_timezone()))


def place(errors: dict, known: set[str], renamed: dict | None = None) -> dict:
    """A service's messages by field: those for fields the form has (under their own name, or
    the form's name for it in `renamed`) stay by their field; the rest go to the form as a whole."""
    out: dict[str, list[str]] = {}
    for key, messages in errors.items():
        key = (renamed or {}).get(key, key)
        out.setdefault(key if key in known else "", []).extend(messages)
    return out


def field_errors(form, name: str) -> list[str]:
    """Errors of a WTForms field or of a service ValidationError stored on the form."""
    field = getattr(form, name, None)
    found = list(getattr(field, "errors", []) or [])
    found += form.service_errors.get(name, []) if hasattr(form, "service_errors") else []
    return found


RETYPE_PASSWORD = "Type it again: a password is not kept when the form comes back with an error."


def retype_password(form, name: str) -> bool:
    """A password typed into a form that came back with errors: the field is empty again (we keep
    no password between requests), so the page says it must be typed again."""
    field = getattr(form, name, None)
    if getattr(field, "type", None) != "PasswordField" or not any(field.raw_data or []):
        return False
    return bool(form.errors or getattr(form, "service_errors", None))


def form_labels(*forms) -> dict[str, str]:
    """Field name → label over some form classes: the history says "Client", as the form does,
    not "client_id". The first form that has a field names it."""
    labels: dict[str, str] = {}
    for form in forms:
        for name, field in vars(form).items():
            label = getattr(field, "args", None)
            if label and isinstance(label[0], str) and hasattr(field, "field_class"):
                labels.setdefault(name, label[0])
    return labels


def audit_value(value) -> str:
    """One side of an audited change, as a person reads it."""
    if value is None or value == [] or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
