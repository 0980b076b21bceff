"""How values read on a page: times in the viewer's time zone, form errors."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask_login import current_user


def viewer_timezone() -> ZoneInfo:
    """The signed-in user's own time zone ("My settings"), else their MSP's, else UTC."""
    if current_user and current_user.is_authenticated:
        for name in (current_user.timezone, current_user.msp.timezone):
            if not name:
                continue
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue  # a name this system no longer knows: try the next one
    return ZoneInfo("UTC")


def localtime(value: datetime | None) -> datetime | None:
    return value.astimezone(viewer_timezone()) if value else None


def when(value: datetime | None) -> str:
    local = localtime(value)
    return local.strftime("%Y-%m-%d %H:%M %Z") if local else "never"


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
