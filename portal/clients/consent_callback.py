"""The end of a consent link: the customer's global admin, who is no portal user, comes back from
Microsoft to the portal's one OAuth2 callback (portal.oauth_callback dispatches the purpose
"tenant consent" here) and reads, in plain words, whether their tenant is now connected."""

from __future__ import annotations

from flask import current_app, render_template

from portal.services import tenant_consent as consent_svc
from portal.services.oauth_states import StartedSignIn


def finish(started: StartedSignIn, answer: dict):
    """(the started consent, the callback's query) -> the page for the customer's admin. When it
    did not go through nothing was stored, and the error status commits nothing."""
    done = consent_svc.finish_tenant_consent(started, answer, current_app.config["TIDEMARK_ENCRYPTION_KEY"])
    return render_template("clients/consent_done.html", done=done), 400 if done.problem else 200
