"""The Exchange Online PowerShell a customer's admin runs once consent is given, so that the MSP's
app reaches named mailboxes and no others: Exchange's pointer to the app's service principal,
RBAC for Applications scoped to those mailboxes (Graph), and FullAccess on each (IMAP and POP,
which RBAC for Applications does not cover). Application access policies, the older way, are
not used. Plain text, no database: the client page fills it in.
"""

from __future__ import annotations

import re

PLACEHOLDER_MAILBOX = "helpdesk@customer.example"
OBJECT_ID_PLACEHOLDER = "PASTE-THE-OBJECT-ID-HERE"
ROLES = ("Application Mail.ReadWrite", "Application Mail.Send")


# PowerShell reads the typographic quotes as quotes too: “ ” „ as ", and ‘ ’ ‚ ‛ as '.
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_string(value: str) -> str:
    """A PowerShell double-quoted string: backtick, dollar sign and every double quote escaped."""
    return '"' + re.sub(f"([`${DOUBLE_QUOTES}])", r"`\1", value) + '"'


def _opath(value: str) -> str:
    """A value in an OPATH filter, single-quoted (every single quote doubled)."""
    return "'" + re.sub(f"([{SINGLE_QUOTES}])", r"\1\1", value) + "'"


def scope_name(msp_name: str) -> str:
    """A management scope's name: the MSP's, in plain letters."""
    cleaned = " ".join(re.sub(r"[^A-Za-z0-9 .-]+", " ", msp_name).split())
    return f"{cleaned or 'MSP'} helpdesk mailboxes"[:64]


def powershell(app_id: str, msp_name: str, mailboxes: list[str]) -> str:
    """The lines to copy, filled in with the app's id and the mailboxes (a placeholder when the
    client has no app-only mailbox yet)."""
    addresses = list(dict.fromkeys(m.strip().lower() for m in mailboxes if m and m.strip())) or [PLACEHOLDER_MAILBOX]
    scope = ps_string(scope_name(msp_name))
    restriction = " -or ".join(f"PrimarySmtpAddress -eq {_opath(a)}" for a in addresses)
    lines = [
        "# Exchange Online PowerShell, as an Exchange administrator of your tenant",
        "Install-Module -Name ExchangeOnlineManagement   # once per computer",
        "Connect-ExchangeOnline",
        "",
        "# 1. The app's service principal in Exchange. Its Object ID is on Microsoft Entra admin center >",
        "#    Enterprise applications > (the app) > Overview; not the Object ID of an app registration.",
        f"$AppId = {ps_string(app_id)}",
        f"$ObjectId = {ps_string(OBJECT_ID_PLACEHOLDER)}",
        f"New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName {ps_string(msp_name + ' helpdesk')}",
        "",
        "# 2. Microsoft Graph: only these mailboxes (RBAC for Applications)",
        f"New-ManagementScope -Name {scope} -RecipientRestrictionFilter {ps_string(restriction)}",
    ]
    lines += [f"New-ManagementRoleAssignment -App $ObjectId -Role {ps_string(role)} -CustomResourceScope {scope}"
              for role in ROLES]
    lines += ["", "# 3. IMAP and POP: full access to each mailbox"]
    lines += [f"Add-MailboxPermission -Identity {ps_string(a)} -User $ObjectId -AccessRights FullAccess"
              for a in addresses]
    lines += ["", "# 4. Check: InScope is True for each role"]
    lines += [f"Test-ServicePrincipalAuthorization -Identity $ObjectId -Resource {ps_string(a)}" for a in addresses]
    return "\n".join(lines) + "\n"
