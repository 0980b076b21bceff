"""Users, sign-in and its throttling. Flush, never commit."""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models import ROLES, Client, SignInFailure, User
from portal.models.users import new_session_token
from portal.models.base import utcnow
from portal.services import ValidationError, audit

MIN_PASSWORD_LENGTH = 10


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the email is unknown, so a wrong email costs as long as a wrong
    password. Made on first use: hashing costs a sixth of a second, which every worker start paid."""
    return generate_password_hash("tidemark-timing-equaliser")


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
    """The account of this address: the user who has set a password (an address has at most
    one). Without one, one of the MSPs' invitations to it, if any."""
    users = db.session.scalars(select(User).where(User.email == email.strip().lower()).order_by(User.id)).all()
    return next((u for u in users if not invitation_pending(u)), users[0] if users else None)


def get_user_in_msp(msp_id: int, email: str) -> User | None:
    return db.session.scalar(select(User).where(User.msp_id == msp_id, User.email == email.strip().lower()))



def user_for_session(token: str) -> User | None:
    return db.session.scalar(select(User).where(User.session_token == token))


def end_sessions(user: User) -> None:
    """A new session token: every session and remember cookie issued before, on any device and
    copies included, no longer signs anyone in."""
    user.session_token = new_session_token()
    db.session.flush()


def sign_out_everywhere(user: User) -> None:
    end_sessions(user)
    audit.record(user, user.msp_id, "user", user.id, "signed out everywhere")


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
        check_password_hash(_dummy_hash(), password or "")
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
    except EmailNotValidError:
        text = (raw or "").strip()
        raise ValidationError({"email": [f"“{text}” is not an email address like name@contoso.com." if text
                                         else "Type an email address, e.g. name@contoso.com."]}) from None
    return checked.normalized.lower()


def _check_new_user(msp: Client, email: str, role: str, *, account: bool) -> tuple[str, dict[str, list[str]]]:
    """(normalised email, errors) for a new user's email and role. Only this MSP's users are
    named; an `account` (a password set now, which only the command line does) also needs an
    address that has no account anywhere."""
    errors: dict[str, list[str]] = {}
    try:
        email = normalise_email(email)
    except ValidationError as exc:
        errors.update(exc.errors)
    else:
        if get_user_in_msp(msp.id, email):
            errors["email"] = [f"A user with the email {email} already exists."]
        elif account and (other := get_user_by_email(email)) is not None and not invitation_pending(other):
            errors["email"] = [f"{email} already has an account, in another MSP. An address has one account."]
    if role not in ROLES:
        errors["role"] = [f"The role is one of {', '.join(ROLES)}."]
    return email, errors


def create_user(
    msp: Client, email: str, password: str, role: str, actor: User | None, name: str = ""
) -> User:
    email, errors = _check_new_user(msp, email, role, account=True)
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


# --- managing users in the portal -------------------------------------------------------------------------

INVITATION_DAYS = 7
_INVITATION_SALT = "tidemark-invitation"
# A password hash no password can match (werkzeug needs "method$salt$hash"): marks an invited user.
_INVITED_PREFIX = "!invited-"
USERS_PAGE = 25


ALREADY_AN_ACCOUNT = ("This invitation cannot be used: this address already has a Tidemark account, and an "
                      "address has only one. Sign in with it, or ask the administrator who invited you to "
                      "invite another address of yours.")


class InvitationError(Exception):
    """A link that cannot be used, with the reason in plain words."""


def invitation_pending(user: User) -> bool:
    return user.password_hash.startswith(_INVITED_PREFIX)


def user_state(user: User) -> str:
    if user.disabled:
        return "disabled"
    return "invited" if invitation_pending(user) else "active"


def _new_invitation(user: User) -> None:
    # A fresh unusable hash also voids every earlier link, since links carry a fingerprint of it.
    user.password_hash = _INVITED_PREFIX + secrets.token_hex(16)


def get_user(msp_id: int, user_id: int) -> User | None:
    return db.session.scalar(select(User).where(User.id == user_id, User.msp_id == msp_id))


def list_users(msp_id: int, query: str = "", *, page: int = 1, per_page: int = USERS_PAGE) -> tuple[list[User], int]:
    where = [User.msp_id == msp_id]
    if query:
        pattern = f"%{query.lower()}%"
        where.append(func.lower(User.email).like(pattern) | func.lower(User.name).like(pattern))
    total = db.session.scalar(select(func.count()).select_from(User).where(*where))
    users = db.session.scalars(
        select(User).where(*where).order_by(func.lower(User.name), User.email).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return list(users), total


def _fingerprint(user: User) -> str:
    return hashlib.sha256(f"{user.id}:{user.password_hash}:{user.session_token}".encode()).hexdigest()[:20]


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_INVITATION_SALT)


def invitation_token(user: User, secret: str) -> str:
    return _serializer(secret).dumps({"u": user.id, "f": _fingerprint(user)})


def user_for_invitation(token: str, secret: str, *, max_age: int = INVITATION_DAYS * 86400) -> User:
    """The invited user the link is for; InvitationError says why a link cannot be used."""
    try:
        payload = _serializer(secret).loads(token, max_age=max_age)
    except SignatureExpired:
        raise InvitationError(
            f"This invitation link is older than {INVITATION_DAYS} days. Ask an administrator to send a new one."
        ) from None
    except BadSignature:
        raise InvitationError("This invitation link is not valid. Check that you copied all of it.") from None
    user = db.session.get(User, payload.get("u")) if isinstance(payload, dict) else None
    if user is None or not invitation_pending(user) or _fingerprint(user) != payload.get("f"):
        raise InvitationError(
            "This invitation link has been used or replaced by a newer one. "
            "Sign in, or ask an administrator to send a new invitation."
        )
    if user.disabled:
        raise InvitationError("This account is disabled. Ask an administrator of your MSP to enable it.")
    account = get_user_by_email(user.email)
    if account is not None and account.id != user.id and not invitation_pending(account):
        raise InvitationError(ALREADY_AN_ACCOUNT)
    return user


def _password_errors(password: str, confirmation: str) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if problems := validate_password(password):
        errors["password"] = problems
    elif password != confirmation:
        errors["confirmation"] = ["The two passwords are not the same."]
    return errors


def invite_user(msp: Client, email: str, name: str, role: str, actor: User | None) -> User:
    """A user who sets their own password through an invitation link. An address that has an
    account in another MSP is invited like any other: its link then says it cannot be used."""
    email, errors = _check_new_user(msp, email, role, account=False)
    if len(name.strip()) > 200:
        errors["name"] = ["Keep the name under 200 characters."]
    if errors:
        raise ValidationError(errors)
    user = User(msp_id=msp.id, email=email, role=role, name=name.strip())
    _new_invitation(user)
    db.session.add(user)
    db.session.flush()
    audit.record(actor, msp.id, "user", user.id, "invited",
                 {"email": [None, email], "name": [None, user.name or None], "role": [None, role]})
    return user


def renew_invitation(user: User, actor: User | None) -> None:
    if not invitation_pending(user):
        raise ValidationError({"": [f"{user.email} has already set a password."]})
    if user.disabled:
        raise ValidationError({"": [f"{user.email} is disabled. Enable the account first."]})
    _new_invitation(user)
    db.session.flush()
    audit.record(actor, user.msp_id, "user", user.id, "invitation sent again")


def accept_invitation(user: User, password: str, confirmation: str) -> None:
    if errors := _password_errors(password, confirmation):
        raise ValidationError(errors)
    user.set_password(password)
    user.last_sign_in_at = utcnow()
    db.session.flush()
    audit.record(user, user.msp_id, "user", user.id, "set a password from the invitation")


def _other_active_admins(user: User) -> int:
    return db.session.scalar(
        select(func.count()).select_from(User).where(
            User.msp_id == user.msp_id, User.id != user.id, User.role == "admin", User.disabled.is_(False),
            User.password_hash.not_like(_INVITED_PREFIX + "%"),
        )
    )


def _guard_last_admin(user: User, what: str) -> None:
    if user.role == "admin" and not user.disabled and not invitation_pending(user) and _other_active_admins(user) == 0:
        raise ValidationError({"": [
            f"{user.email} is the last active admin of {user.msp.name}; {what} would leave nobody to manage it. "
            "Make someone else an admin first."
        ]})


def change_role(user: User, role: str, actor: User | None) -> bool:
    """Returns whether anything changed."""
    if role not in ROLES:
        raise ValidationError({"role": [f"The role is one of {', '.join(ROLES)}."]})
    if role == user.role:
        return False
    if user.role == "admin":
        if actor is not None and actor.id == user.id:
            raise ValidationError({"role": ["You cannot take away your own admin role. Ask another admin."]})
        _guard_last_admin(user, "making them a technician")
    audit.record(actor, user.msp_id, "user", user.id, "changed role", {"role": [user.role, role]})
    user.role = role
    db.session.flush()
    return True


def set_user_disabled(user: User, disabled: bool, actor: User | None) -> bool:
    """Disabling ends every session of the user. Returns whether anything changed."""
    if user.disabled == disabled:
        return False
    if disabled:
        if actor is not None and actor.id == user.id:
            raise ValidationError({"": ["You cannot disable your own account."]})
        _guard_last_admin(user, "disabling them")
        end_sessions(user)
    user.disabled = disabled
    db.session.flush()
    audit.record(actor, user.msp_id, "user", user.id, "disabled" if disabled else "enabled",
                 {"disabled": [not disabled, disabled]})
    return True


def update_profile(user: User, name: str, timezone: str, timezones: set[str] | list[str]) -> bool:
    """Name and time zone from "My settings"; an empty time zone means the MSP's."""
    name = " ".join((name or "").split())
    timezone = (timezone or "").strip() or None
    errors: dict[str, list[str]] = {}
    if len(name) > 200:
        errors["name"] = ["Keep the name under 200 characters."]
    if timezone is not None and timezone not in timezones:
        errors["timezone"] = [f"{timezone} is not a time zone. Pick one from the list, e.g. Europe/Berlin."]
    if errors:
        raise ValidationError(errors)
    before = {"name": user.name, "timezone": user.timezone}
    changes = audit.diff(before, {"name": name, "timezone": timezone})
    if not changes:
        return False
    user.name, user.timezone = name, timezone
    db.session.flush()
    audit.record(user, user.msp_id, "user", user.id, "updated own settings", changes)
    return True


def change_password(user: User, current: str, password: str, confirmation: str, *, ip: str = "unknown",
                    policy: ThrottlePolicy | None = None) -> None:
    """A new password and a new session token: every other session of the user ends. Wrong
    current passwords count like failed sign-ins, so a left-open session cannot be used to guess."""
    errors: dict[str, list[str]] = {}
    if policy is not None:
        now = utcnow()
        failures = db.session.execute(
            select(func.count(), func.min(SignInFailure.at)).where(SignInFailure.email == user.email,
                                                                   SignInFailure.at >= now - policy.window)).one()
        if failures[0] >= policy.max_per_account:
            minutes = _minutes_until_free(failures[1], policy.window, now)
            raise ValidationError({"current": [f"Too many wrong passwords. Try again in {minutes} minutes."]})
    if not user.check_password(current or ""):
        errors["current"] = ["This is not your current password."]
        if policy is not None:
            # Its own transaction: the caller rolls the failed change back, not the count.
            with db.session.begin_nested():
                db.session.add(SignInFailure(email=user.email, ip=ip[:64], at=utcnow()))
    errors.update(_password_errors(password, confirmation))
    if not errors and password == current:
        errors["password"] = ["The new password is the same as the current one."]
    if errors:
        raise ValidationError(errors)
    user.set_password(password)
    db.session.flush()
    audit.record(user, user.msp_id, "user", user.id, "changed own password")
