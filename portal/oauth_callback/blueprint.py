"""The OAuth2 callback's blueprint, on its own so its view module can add to it."""

from flask import Blueprint

bp = Blueprint("oauth_callback", __name__)
