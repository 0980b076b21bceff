"""/users for admins, and the public page an invitation link opens."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user

from portal.auth.access import admin_required
from portal.extensions import db, htmx
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, audit, commit
from portal.services import users as svc
from portal.users.forms import InviteForm, RoleForm, SetPasswordForm

bp = Blueprint("users", __name__, url_prefix="/users")
invitation_bp = Blueprint("invitation", __name__, url_prefix="/invitation")
HISTORY_PAGE = 20


def _user_or_404(user_id: int):
    user = svc.get_user(g.msp_id, user_id)
    if user is None:
        abort(404)
    return user


def _link(user) -> str:
    token = svc.invitation_token(user, current_app.config["SECRET_KEY"])
    return url_for("invitation.accept", token=token, _external=True)


@bp.get("")
@admin_required
def index():
    query = request.args.get("q", "").strip()
    page = max(1, request.args.get("page", 1, type=int))
    users, total = svc.list_users(g.msp_id, query, page=page)
    pages = max(1, -(-total // svc.USERS_PAGE))
    return render_page("users/index.html", "users/_list.html", users=users, total=total, page=page,
                       pages=pages, query=query, state=svc.user_state)


@bp.route("/invite", methods=["GET", "POST"])
@admin_required
def invite():
    form = InviteForm()
    if form.validate_on_submit():
        try:
            user = svc.invite_user(current_user.msp, form.email.data, form.name.data or "", form.role.data,
                                   current_user)
        except ValidationError as exc:
            db.session.rollback()
            form.service_errors = exc.errors
        else:
            return render_page("users/invited.html", "users/_invited.html", user=user, link=_link(user))
    status = 422 if request.method == "POST" else 200
    return render_page("users/invite.html", "users/_invite_form.html", form=form), status


def _detail(user, *, role_form=None, errors=None, link=None, status=200):
    entries, total = audit.history(g.msp_id, "user", user.id, per_page=HISTORY_PAGE)
    role_form = role_form or RoleForm(formdata=None, role=user.role)
    return render_template(
        "users/detail.html", user=user, state=svc.user_state(user), role_form=role_form, errors=errors or {},
        link=link, invitation_errors=[], history=entries, history_total=total, history_page=1,
        history_pages=max(1, -(-total // HISTORY_PAGE)),
    ), status


@bp.get("/<int:user_id>")
@admin_required
def detail(user_id: int):
    return _detail(_user_or_404(user_id))


@bp.get("/<int:user_id>/history")
@admin_required
def history(user_id: int):
    user = _user_or_404(user_id)
    page = max(1, request.args.get("page", 1, type=int))
    entries, total = audit.history(g.msp_id, "user", user.id, page=page, per_page=HISTORY_PAGE)
    return render_page("users/history.html", "users/_history.html", user=user, history=entries,
                       history_total=total, history_page=page, history_pages=max(1, -(-total // HISTORY_PAGE)))


@bp.post("/<int:user_id>/role")
@admin_required
def change_role(user_id: int):
    user = _user_or_404(user_id)
    form = RoleForm()
    if form.validate_on_submit():
        try:
            changed = svc.change_role(user, form.role.data, current_user)
        except ValidationError as exc:
            db.session.rollback()
            form.service_errors = exc.errors
        else:
            flash(f"{user.email} is now {'an admin' if user.is_admin else 'a technician'}." if changed
                  else "Nothing changed.", "success")
            return hx_redirect(url_for("users.detail", user_id=user.id))
    return _detail(_user_or_404(user_id), role_form=form, status=422)


def _set_disabled(user_id: int, disabled: bool):
    user = _user_or_404(user_id)
    try:
        svc.set_user_disabled(user, disabled, current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _detail(_user_or_404(user_id), errors=exc.errors, status=422)
    flash(f"{user.email} is disabled and signed out everywhere." if disabled else f"{user.email} is enabled.",
          "success")
    return hx_redirect(url_for("users.detail", user_id=user.id))


@bp.post("/<int:user_id>/disable")
@admin_required
@asks_first("Disable this user")
def disable(user_id: int):
    return _set_disabled(user_id, True)


@bp.post("/<int:user_id>/enable")
@admin_required
def enable(user_id: int):
    return _set_disabled(user_id, False)


@bp.post("/<int:user_id>/invitation")
@admin_required
@asks_first("Make a new invitation link")
def renew_invitation(user_id: int):
    user = _user_or_404(user_id)
    try:
        svc.renew_invitation(user, current_user)
    except ValidationError as exc:
        db.session.rollback()
        if htmx and not htmx.boosted:
            problems = [m for msgs in exc.errors.values() for m in msgs]
            return render_template("users/_invitation.html", invitation_errors=problems, link=None), 422
        return _detail(_user_or_404(user_id), errors=exc.errors, status=422)
    if htmx and not htmx.boosted:
        return render_template("users/_invitation.html", invitation_errors=[], link=_link(user), user=user)
    return _detail(user, link=_link(user))


# --- the invited person's side: no sign-in, the signed link is the key ---------------------------------


@invitation_bp.route("/<token>", methods=["GET", "POST"])
def accept(token: str):
    try:
        user = svc.user_for_invitation(token, current_app.config["SECRET_KEY"])
    except svc.InvitationError as exc:
        return render_template("users/invitation.html", problem=str(exc), form=None, user=None), 400
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            svc.accept_invitation(user, form.password.data, form.confirmation.data)
        except ValidationError as exc:
            db.session.rollback()
            form.service_errors = exc.errors
        else:
            commit()  # before login_user puts the new session token (set with the password) in the cookie
            session.clear()  # whoever was signed in on this browser before: a fresh session
            login_user(user)
            session.permanent = True
            flash(f"Welcome to Tidemark, {user.name or user.email}. Your password is set.", "success")
            return redirect(url_for("main.dashboard"))
    status = 422 if request.method == "POST" else 200
    return render_template("users/invitation.html", problem=None, form=form, user=user), status
