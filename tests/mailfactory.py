"""Build test emails and push them through the real pipeline."""

from __future__ import annotations

import itertools
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timedelta, timezone

_clock = itertools.count()


def email(sender="alice@contoso.com", to=("support@acme.example",), subject="Printer on fire", body="It burns.",
          cc=(), message_id=None, in_reply_to=None, references=(), headers=None, attachments=(), html=None,
          date=None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="test.example")
    # Distinct dates, so two test mails never share a fingerprint by accident.
    msg["Date"] = format_datetime(date or datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=next(_clock)))
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
