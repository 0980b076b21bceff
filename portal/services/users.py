"""Users, sign-in and its throttling. Flush, never commit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models import ROLES, Client, SignInFailure, User
from portal.models.base import utcnow
from portal.services import ValidationError, audit

MIN_PASSWORD_LENGTH = 10
# Checked against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("tidemark-timing-equaliser")

BAD_CREDENTIALS = "The email address or password is not right. Check both and try again."


@dataclass(frozen=True)
class ThrottlePolicy:
    window: timedelta
    max_per_account: int
    max_per_ip: int


@dataclass
class SignInResult:
    user: User | None
    error: str | None = None


def get_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email.strip().lower()))



def user_for_session(token: str) -> User | None:
    return db.session.scalar(select(User).where(User.session_token == token))


def _minutes_until_free(failures_since: datetime, window: timedelta, now: datetime) -> int:
    return max(1, math.ceil((failures_since + window - now).total_seconds() / 60))


def sign_in(email: str, password: str, ip: str, policy: ThrottlePolicy) -> SignInResult:
    email = (email or "").strip().lower()
    now = utcnow()
    since = now - policy.window

    ip_failures = db.session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(SignInFailure.ip == ip, SignInFailure.at >= since)
    ).one()
    if ip_failures[0] >= policy.max_per_ip:
        minutes = _minutes_until_free(ip_failures[1], policy.window, now)
        return SignInResult(None, f"Too many failed sign-ins from your network. Try again in {minutes} minutes.")
    account_failures = db.session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(SignInFailure.email == email, SignInFailure.at >= since)
    ).one()
    if account_failures[0] >= policy.max_per_account:
        minutes = _minutes_until_free(account_failures[1], policy.window, now)
        return SignInResult(
            None, f"Too many failed sign-ins for this account. Try again in {minutes} minutes."
        )

    user = get_user_by_email(email) if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        ok = False
    else:
        ok = user.check_password(password or "")
    if not ok:
        db.session.add(SignInFailure(email=email[:320], ip=ip[:64], at=now))
        db.session.flush()
        return SignInResult(None, BAD_CREDENTIALS)
    if user.disabled:
        return SignInResult(None, "This account is disabled. Ask an administrator of your MSP to enable it.")
    db.session.execute(delete(SignInFailure).where(SignInFailure.email == email))
    user.last_sign_in_at = now
    db.session.flush()
    return SignInResult(user)


def prune_sign_in_failures(older_than: timedelta) -> int:
    """Forget failures that no window counts any more; returns how many were removed."""
    result = db.session.execute(delete(SignInFailure).where(SignInFailure.at < utcnow() - older_than))
    return result.rowcount or 0


def validate_password(password: str) -> list[str]:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        return [f"Use at least {MIN_PASSWORD_LENGTH} characters."]
    return []


def normalise_email(raw: str) -> str:
    try:
        checked = validate_email((raw or "").strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError({"email": [f"{raw!r} is not a valid email address ({exc})."]}) from None
    return checked.normalized.lower()


def create_user(
    msp: Client, email: str, password: str, role: str, actor: User | None, name: str = ""
) -> User:
    errors: dict[str, list[str]] = {}
    try:
        email = normalise_email(email)
    except ValidationError as exc:
        errors.update(exc.errors)
    else:
        if get_user_by_email(email):
            errors["email"] = [f"A user with the email {email} already exists."]
    if role not in ROLES:
        errors["role"] = [f"The role is one of {', '.join(ROLES)}."]
    if problems := validate_password(password):
        errors["password"] = problems
    if not msp.is_msp:
        errors["msp"] = ["Users belong to an MSP, not to a sub-client."]
    if errors:
        raise ValidationError(errors)
    user = User(msp_id=msp.id, email=email, role=role, name=name.strip())
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record(actor, msp.id, "user", user.id, "created", {"email": [None, email], "role": [None, role]})
    return user
