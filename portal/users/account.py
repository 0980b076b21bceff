"""/account: every signed-in user's own name, time zone and password, and signing out everywhere."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, render_template, request, url_for
from flask_login import current_user, login_user

from portal.auth.views import end_this_session
from portal.extensions import db
from portal.responses import asks_first, hx_redirect
from portal.services import ValidationError, commit
from portal.services import users as svc
from portal.services.clients import timezone_names
from portal.users.forms import PasswordForm, ProfileForm

bp = Blueprint("account", __name__, url_prefix="/account")


def _profile_form(formdata=True) -> ProfileForm:
    user = current_user
    if formdata:
        form = ProfileForm()
    else:
        form = ProfileForm(formdata=None, name=user.name, timezone=user.timezone or "")
    return form


def _page(profile: ProfileForm, password: PasswordForm, status: int = 200):
    return render_template("account/index.html", profile=profile, password=password), status


@bp.get("")
def index():
    return _page(_profile_form(formdata=False), PasswordForm(formdata=None))


@bp.post("")
def save_profile():
    form = _profile_form()
    if form.validate_on_submit():
        try:
            changed = svc.update_profile(current_user, form.name.data or "", form.timezone.data or "",
                                         set(timezone_names()))
        except ValidationError as exc:
            db.session.rollback()
            form.service_errors = exc.errors
        else:
            flash("Your settings are saved." if changed else "Nothing changed.", "success")
            return hx_redirect(url_for("account.index"))
    return _page(form, PasswordForm(formdata=None), 422)


@bp.post("/password")
def change_password():
    form = PasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            cfg = current_app.config
            policy = svc.ThrottlePolicy(cfg["LOGIN_WINDOW"], cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
                                        cfg["LOGIN_MAX_FAILURES_PER_IP"])
            svc.change_password(user, form.current.data, form.password.data, form.confirmation.data,
                                ip=request.remote_addr or "unknown", policy=policy)
        except ValidationError as exc:
            # The answer is 422, which commits nothing: the counted wrong password is kept here
            # (nothing else was written).
            commit()
            form.service_errors = exc.errors
        else:
            commit()  # before login_user puts the new session token in the cookie
            login_user(user)  # the session now carries the new token: this one stays, the others end
            flash("Your password is changed. Any other sessions are signed out.", "success")
            return hx_redirect(url_for("account.index"))
    return _page(_profile_form(formdata=False), form, 422)


@bp.post("/sign-out-everywhere")
@asks_first("Sign out everywhere")
def sign_out_everywhere():
    svc.sign_out_everywhere(current_user._get_current_object())
    commit()  # the old token is void everywhere before this browser forgets it
    end_this_session("You are signed out on every device.")
    return hx_redirect(url_for("auth.sign_in"))
