"""Dovecot checkpassword program for the tests: a mailbox opened with someone else's access token.

Exchange Online reads XOAUTH2's user= as the mailbox to open and lets the token's owner (a user
with FullAccess, or the app) in when they were granted that mailbox. Dovecot's own oauth2 passdb
insists that the token belongs to user= itself, so tests/dovecot.py chains this program after it
for XOAUTH2 and OAUTHBEARER: the token must be active at the authorisation server's introspection
endpoint, and its username must be listed in <grants>/<mailbox> (one name per line).

Run by Dovecot as: dovecot_delegation.py <introspection_url> <grants_dir> <reply program>, with
"user NUL token NUL" on file descriptor 3 (the checkpassword interface). Standard library only:
Dovecot's auth worker runs it with the system Python.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request

TEMPORARY_FAILURE = 111  # checkpassword: the check itself failed (Dovecot answers "try again")


def owner_of(url: str, token: str) -> str | None:
    """The token's username when it is active, else None."""
    data = urllib.parse.urlencode({"token": token}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=5) as answer:
        found = json.loads(answer.read())
    return str(found.get("username") or "") or None if found.get("active") is True else None


def granted(grants_dir: str, mailbox: str, owner: str) -> bool:
    if "/" in mailbox or mailbox.startswith("."):
        return False
    try:
        with open(os.path.join(grants_dir, mailbox), encoding="utf-8") as f:
            return owner.lower() in {line.strip().lower() for line in f}
    except FileNotFoundError:
        return False


def main(argv: list[str]) -> int:
    url, grants_dir, reply = argv[1], argv[2], argv[3:]
    with os.fdopen(3, "rb") as f:
        mailbox, token = (part.decode("utf-8", "replace") for part in f.read().split(b"\0")[:2])
    try:
        owner = owner_of(url, token)
    except (OSError, ValueError):
        return TEMPORARY_FAILURE
    if owner is None or not granted(grants_dir, mailbox, owner):
        return 1
    os.environ["USER"] = mailbox
    os.execv(reply[0], reply)  # checkpassword: success is running the reply program
    return TEMPORARY_FAILURE


if __name__ == "__main__":
    sys.exit(main(sys.argv))
