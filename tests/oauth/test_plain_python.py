"""portal.oauth is plain Python: importing it loads neither Flask nor SQLAlchemy nor the database.

`requests` is allowed: it is the HTTP client under Authlib's OAuth2 client, which portal.oauth uses."""

from __future__ import annotations

import subprocess
import sys


def test_portal_oauth_needs_no_flask_and_no_database():
    code = ("import sys, portal.oauth; print(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'flask', 'sqlalchemy', 'flask_sqlalchemy', 'rq', 'redis', 'psycopg'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
