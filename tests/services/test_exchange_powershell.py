"""The PowerShell a customer's admin copies: the app's id, the client's mailboxes, RBAC for
Applications scoped to them, FullAccess for IMAP and POP, and values PowerShell cannot misread."""

import pytest

from portal.services.exchange_powershell import PLACEHOLDER_MAILBOX, powershell

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"


def test_the_lines_name_the_app_and_scope_it_to_the_mailboxes():
    script = powershell(APP_ID, "Acme MSP", ["Helpdesk@contoso.com", "billing@contoso.com", "helpdesk@contoso.com"])
    lines = script.splitlines()
    assert f'$AppId = "{APP_ID}"' in lines
    assert 'New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName "Acme MSP helpdesk"' in lines
    assert ('New-ManagementScope -Name "Acme MSP helpdesk mailboxes" -RecipientRestrictionFilter '
            '"PrimarySmtpAddress -eq \'helpdesk@contoso.com\' -or PrimarySmtpAddress -eq \'billing@contoso.com\'"'
            in lines)
    for role in ("Application Mail.ReadWrite", "Application Mail.Send"):
        assert (f'New-ManagementRoleAssignment -App $ObjectId -Role "{role}" '
                f'-CustomResourceScope "Acme MSP helpdesk mailboxes"') in lines
    assert [line for line in lines if line.startswith("Add-MailboxPermission")] == [
        'Add-MailboxPermission -Identity "helpdesk@contoso.com" -User $ObjectId -AccessRights FullAccess',
        'Add-MailboxPermission -Identity "billing@contoso.com" -User $ObjectId -AccessRights FullAccess']
    assert "ApplicationAccessPolicy" not in script  # the older way is not used


def test_no_mailbox_yet_gives_an_example_and_odd_characters_are_escaped():
    script = powershell(APP_ID, 'Bob\'s "IT" $ervices', [])
    assert f'-Identity "{PLACEHOLDER_MAILBOX}"' in script
    assert '-DisplayName "Bob\'s `"IT`" `$ervices helpdesk"' in script
    assert '-Name "Bob s IT ervices helpdesk mailboxes"' in script
    quoted = powershell(APP_ID, "Acme", ["o'brien$1@contoso.com"])
    assert "PrimarySmtpAddress -eq 'o''brien`$1@contoso.com'" in quoted


@pytest.mark.parametrize("quote, escaped, doubled", [
    ("\u201c", "`\u201c", "\u201c"), ("\u201d", "`\u201d", "\u201d"), ("\u201e", "`\u201e", "\u201e"),
    ("\u2018", "\u2018", "\u2018\u2018"), ("\u2019", "\u2019", "\u2019\u2019"),
])
def test_typographic_quotes_in_a_mailbox_name_are_escaped_like_plain_ones(quote, escaped, doubled):
    name = f"o{quote}brien@contoso.com"
    lines = powershell(APP_ID, f"Acme {quote}MSP{quote}", [name]).splitlines()
    # In a double-quoted string a typographic double quote gets its backtick (a single one is plain there) ...
    assert f'Add-MailboxPermission -Identity "o{escaped}brien@contoso.com" -User $ObjectId -AccessRights FullAccess' \
        in lines
    assert f'Test-ServicePrincipalAuthorization -Identity $ObjectId -Resource "o{escaped}brien@contoso.com"' in lines
    assert f'-DisplayName "Acme {escaped}MSP{escaped} helpdesk"' in "\n".join(lines)
    # ... and in the OPATH filter's single-quoted value a typographic single quote is doubled.
    opath_escaped = escaped if quote in "\u201c\u201d\u201e" else doubled
    assert (f'-RecipientRestrictionFilter "PrimarySmtpAddress -eq \'o{opath_escaped}brien@contoso.com\'"'
            in "\n".join(lines))
