"""The end of a consent link: the customer's global admin, who is no portal user, comes back from
Microsoft to the portal's one OAuth2 callback (portal.oauth_callback dispatches the purpose
"tenant consent" here) and reads, in plain words, whether their tenant is now connected."""

from __future__ import annotations

from flask import render_template

from portal.extensions import db
from portal.models import Client
from portal.oauth import OAuthError
from portal.services import tenant_consent as consent_svc
from portal.services.oauth_states import StartedSignIn


def finish(started: StartedSignIn, answer: dict):
    """(the started consent, the callback's query) -> the page for the customer's admin."""
    msp = db.session.get(Client, started.msp_id)
    msp_name = msp.name if msp is not None else "your service provider"
    try:
        done = consent_svc.finish_tenant_consent(started, answer)
    except OAuthError as exc:
        # Nothing was stored: the answer may be an error status, nothing is committed.
        return render_template("clients/consent_done.html", done=None, problem=str(exc), msp_name=msp_name), 400
    return render_template("clients/consent_done.html", done=done, problem=None, msp_name=msp_name), 200
