"""One exception for everything OAuth, in plain words that name the provider's code.

`kind` tells callers what to do: `reconnect` (the grant is dead: someone must sign in again),
`consent`, `tenant`, `client_secret`, `config` (an admin must fix a setting), `network` and
`server` (try again later), `refused` (anything else the server said no to).
Messages never carry a secret: the server's own words are cut short and scrubbed of the values
the request sent.
"""

from __future__ import annotations

import re

AADSTS = re.compile(r"AADSTS(\d+)")
NAMES = {"microsoft": "Microsoft", "google": "Google", "generic": "the OAuth server"}

# Microsoft's codes, from Entra ID's error-code reference: (kind, plain words).
MICROSOFT_CODES = {
    65001: ("consent", "consent missing: an administrator of the tenant has not granted the app's permissions"),
    65004: ("consent", "the person signing in declined the consent"),
    90002: ("tenant", "wrong tenant: Microsoft does not know the tenant {tenant}"),
    700016: ("tenant", "wrong tenant: the app is not registered or consented in the tenant {tenant}"),
    7000215: ("client_secret", "wrong client secret: use the secret's Value from Entra ID, not its Secret ID"),
    7000222: ("client_secret", "the client secret has expired: create a new one in Entra ID and enter it here"),
    700082: ("reconnect", "the refresh token expired after a long time unused: reconnect the mailbox"),
    70008: ("reconnect", "the grant has expired: reconnect the mailbox"),
    50173: ("reconnect", "the grant was revoked (a password change or revoked sessions): reconnect the mailbox"),
    50076: ("reconnect", "the tenant now requires multi-factor sign-in: reconnect the mailbox"),
    53003: ("refused", "blocked by the tenant's Conditional Access policies"),
    54005: ("refused", "the sign-in code was already used: start connecting again"),
    700024: ("client_secret", "the client assertion is not valid (certificate or secret)"),
    700027: ("client_secret", "the certificate's signature was refused: the private key is not the one of a "
                              "certificate uploaded to the app registration in Entra ID"),
}


def who(provider: str) -> str:
    """The provider as a sentence starts with it."""
    return NAMES.get(provider, provider)


class OAuthError(Exception):
    """What went wrong talking to an authorisation server, for a person to read."""

    def __init__(self, message: str, *, code: str | None = None, kind: str = "refused", status: int | None = None):
        self.code = code
        self.kind = kind
        self.status = status
        super().__init__(f"{message} ({code})" if code else message)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def reconnect(self) -> bool:
        """The grant is gone: only signing in again brings the mailbox back."""
        return self.kind == "reconnect"

    @property
    def temporary(self) -> bool:
        return self.kind in ("network", "server")


def scrub(text: str, secrets=()) -> str:
    """The server's words, first line only, short, with any value we sent removed."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    for value in secrets:
        if value and len(value) >= 4:
            first = first.replace(value, "[hidden]")
    return first[:200]


def _microsoft(code: int, tenant: str | None, status: int) -> OAuthError | None:
    known = MICROSOFT_CODES.get(code)
    if known is None:
        return None
    kind, words = known
    return OAuthError(words.format(tenant=repr(tenant) if tenant else "given"), code=f"AADSTS{code}", kind=kind,
                      status=status)


def _microsoft_code(body: dict) -> int | None:
    codes = body.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    found = AADSTS.search(str(body.get("error_description") or ""))
    return int(found.group(1)) if found else None


def translate(provider: str, status: int, body: dict, *, tenant: str | None = None, secrets=()) -> OAuthError:
    """The error a token, revocation or authorisation answer means, in plain words."""
    error = str(body.get("error") or "")
    description = scrub(str(body.get("error_description") or ""), secrets)
    code = _microsoft_code(body) if provider == "microsoft" else None
    if code is not None:
        known = _microsoft(code, tenant, status)
        if known is not None:
            return known
    label = f"AADSTS{code}" if code is not None else (error or f"HTTP {status}")
    if error == "invalid_grant":
        return OAuthError("the grant was revoked or has expired: reconnect the mailbox", code=label, kind="reconnect",
                          status=status)
    if error in ("invalid_client", "unauthorized_client"):
        return OAuthError(f"{who(provider)} refused the app's client id or secret" + (f": {description}" if description
                          else ""), code=label, kind="client_secret", status=status)
    if error == "access_denied":
        return OAuthError("the person signing in declined the consent", code=label, kind="consent", status=status)
    if status >= 500 or status == 429 or error == "temporarily_unavailable":
        return OAuthError(f"{who(provider)}'s sign-in service is unavailable (HTTP {status}); it will be tried again",
                          code=label, kind="server", status=status)
    words = f"{who(provider)} refused the request" + (f": {description}" if description else "")
    return OAuthError(words, code=label, kind="refused", status=status)
