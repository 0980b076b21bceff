"""A started OAuth2 sign-in, kept from the redirect to the provider until its callback.

One callback address serves every sign-in the portal starts (a mailbox's Connect, a customer
admin's tenant consent), so the state says what it was for. It lives in Redis and is taken once:
a replayed or stale callback finds nothing. The verifier never reaches the browser.

A mailbox's sign-in lasts ten minutes and is bound to the person who started it, so a callback
link sent to someone else (login CSRF: connecting a mailbox to the attacker's account) is
refused. A tenant consent is the exception: its link is emailed to a customer's global admin,
who is no portal user, so it lasts a week and whoever opens it may finish it. What it can do is
narrow (the client it names gets the tenant that consented, in its history) and it works once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from redis import Redis

from portal.jobs import app_redis
from portal.oauth import Authorisation

LIFETIME = 600  # seconds from the redirect to the provider until the callback is refused
PURPOSES = ("mailbox", "tenant consent")
# Seconds until the callback is refused, per purpose: a consent link waits in someone's inbox.
LIFETIMES = {"mailbox": LIFETIME, "tenant consent": 7 * 24 * 3600}
# Finished by someone who is not signed in to the portal (the customer's admin).
UNBOUND = ("tenant consent",)
_PREFIX = "tidemark:oauth-state:"
CALLBACK_PATH = "/oauth/callback"  # portal.oauth_callback's route


def redirect_uri(portal_url: str) -> str:
    """The one address every provider sends people back to (registered in each app)."""
    return portal_url.rstrip("/") + CALLBACK_PATH


@dataclass(frozen=True)
class StartedSignIn:
    purpose: str  # one of PURPOSES
    msp_id: int
    user_id: int  # who started it (for a tenant consent: who created the link)
    subject_id: int  # the mailbox's id, or the client's for a tenant consent
    authorisation: Authorisation  # without its url: the browser has been sent there already
    app_id: str = ""  # the app (client) id the sign-in was started for


def _key(state: str) -> str:
    # Hashed: a look at Redis does not give out states that would still be accepted.
    return _PREFIX + hashlib.sha256(state.encode()).hexdigest()


def remember(purpose: str, *, msp_id: int, user_id: int, subject_id: int, authorisation: Authorisation,
             app_id: str, connection: Redis | None = None) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown sign-in purpose {purpose!r}")
    started = authorisation
    value = {"purpose": purpose, "msp_id": msp_id, "user_id": user_id, "subject_id": subject_id,
             "app_id": app_id, "state": started.state, "verifier": started.verifier,
             "redirect_uri": started.redirect_uri, "scopes": list(started.scopes)}
    (connection or app_redis()).set(_key(started.state), json.dumps(value), ex=LIFETIMES[purpose])


def purpose_of(state: str | None, *, connection: Redis | None = None) -> str | None:
    """What a started sign-in is for, without taking it; None when unknown or stale. The callback
    asks first when nobody is signed in: a mailbox's Connect needs its person signed in again."""
    if not state:
        return None
    raw = (connection or app_redis()).get(_key(state))
    return json.loads(raw)["purpose"] if raw is not None else None


def take(state: str | None, *, user_id: int | None, connection: Redis | None = None) -> StartedSignIn | None:
    """The sign-in this callback belongs to, once; None when unknown, stale, already used or
    started by someone else (it is gone then too: a stolen state is not tried twice).
    `user_id` is the signed-in person's, None when nobody is: only an UNBOUND purpose is then found."""
    if not state:
        return None
    raw = (connection or app_redis()).getdel(_key(state))
    if raw is None:
        return None
    value = json.loads(raw)
    if value["purpose"] not in UNBOUND and (user_id is None or value["user_id"] != user_id):
        return None
    authorisation = Authorisation(url="", state=value["state"], verifier=value["verifier"],
                                  redirect_uri=value["redirect_uri"], scopes=tuple(value["scopes"]))
    return StartedSignIn(purpose=value["purpose"], msp_id=value["msp_id"], user_id=value["user_id"],
                         subject_id=value["subject_id"], authorisation=authorisation, app_id=value.get("app_id", ""))
