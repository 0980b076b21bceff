"""The one address every OAuth2 provider sends people back to (`GET /oauth/callback`).

The blueprint lives in portal.oauth_callback.blueprint; importing the package brings its view in."""

from portal.oauth_callback import views  # noqa: F401 - adds the callback to bp
from portal.oauth_callback.blueprint import bp

__all__ = ["bp"]
