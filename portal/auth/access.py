"""Who may do what: admins configure, technicians work tickets and read configuration."""

from __future__ import annotations

import functools

from flask import abort
from flask_login import current_user


def admin_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated or not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped
