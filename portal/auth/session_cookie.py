"""The sign-in cookie, sent back only when it says something new.

Flask re-sends a permanent session's cookie with every response, stylesheets and scripts included,
so that the sign-in keeps sliding forward. A browser runs several requests at once: a response that
only re-sent the cookie it was given could arrive after a concurrent one that changed it, and put the
older cookie back. The flash of a form sent while the page's scripts were still loading was lost so.
Here the cookie goes out when the session changed, and otherwise at most every few minutes to slide
the sign-in's end forward, never with a static file."""

from __future__ import annotations

import time

from flask import Flask
from flask import request as current_request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from itsdangerous import BadSignature

# A sign-in of hours that ends up to this much early costs nothing; a cookie re-sent on every
# request costs a lost flash now and then.
SLIDE_EVERY_SECONDS = 300


class SignInSession(SecureCookieSession):
    signed_at: float | None = None  # when the cookie it came from was signed, None for a new one


class SignInCookie(SecureCookieSessionInterface):
    session_class = SignInSession

    def open_session(self, app: Flask, request) -> SignInSession | None:  # noqa: ANN001 - as Flask's
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        try:
            data, signed_at = serializer.loads(
                value, max_age=int(app.permanent_session_lifetime.total_seconds()), return_timestamp=True)
        except BadSignature:
            return self.session_class()
        session = self.session_class(data)
        session.signed_at = signed_at.timestamp()
        return session

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        if session.modified:
            return True
        if current_request.endpoint == "static" or not super().should_set_cookie(app, session):
            return False
        signed_at = getattr(session, "signed_at", None)
        return signed_at is None or time.time() - signed_at >= SLIDE_EVERY_SECONDS
