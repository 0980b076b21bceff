from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from portal.auth.forms import SignInForm
from portal.responses import same_site_path
from portal.services import commit
from portal.services.users import ThrottlePolicy, end_sessions, sign_in as sign_in_user

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so the sign-in page cannot be used to bounce people elsewhere."""
    return same_site_path(target) or url_for("main.dashboard")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = SignInForm()
    error = None
    status = 200
    if form.validate_on_submit():
        cfg = current_app.config
        policy = ThrottlePolicy(
            cfg["LOGIN_WINDOW"], cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"], cfg["LOGIN_MAX_FAILURES_PER_IP"]
        )
        result = sign_in_user(form.email.data, form.password.data, request.remote_addr or "unknown", policy)
        # Now, not after the answer: a failed sign-in answers 401 yet its counted failure must stay,
        # and a cookie is given only for a session token the database has.
        commit()
        if result.user is not None:
            next_url = _safe_next(request.args.get("next"))
            session.clear()  # a fresh session on sign-in: no fixation
            login_user(result.user, remember=form.remember.data)
            session.permanent = True
            return redirect(next_url)
        error = result.error
        status = 401
    elif request.method == "POST":
        status = 422
    return render_template("auth/sign_in.html", form=form, error=error), status


def end_this_session(message: str) -> None:
    """Forget the user in this browser, remember cookie included, once the caller has ended
    the user's sessions on the server."""
    session.clear()
    logout_user()  # after clear(): it leaves the note that deletes the remember cookie
    flash(message, "info")


@bp.post("/sign-out")
def sign_out():
    # The token is the user's, not this browser's: signing out here signs out everywhere.
    if current_user.is_authenticated:
        end_sessions(current_user._get_current_object())
        commit()  # the old token is void everywhere before this browser forgets it
    end_this_session("You are signed out.")
    return redirect(url_for("auth.sign_in"))
