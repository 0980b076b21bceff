import pytest

from portal.services.allowlist import AllowEntryError, normalise_entry, parse_allow_list


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Contoso.COM", ("domain", "contoso.com")),
        ("@contoso.com", ("domain", "contoso.com")),
        ("  mail.contoso.com. ", ("domain", "mail.contoso.com")),
        ("bücher.example", ("domain", "xn--bcher-kva.example")),
        ("Boss@GMail.com", ("address", "boss@gmail.com")),
        ("chef@Bücher.example", ("address", "chef@xn--bcher-kva.example")),
    ],
)
def test_entries_are_normalised(raw, expected):
    assert normalise_entry(raw) == expected


@pytest.mark.parametrize("raw", ["localhost", "exa mple.com", "-bad.example", "a@", "@", "foo@bar@baz.com", "1.2.3.4"])
def test_invalid_entries_are_refused_with_the_entry_named(raw):
    with pytest.raises(AllowEntryError) as err:
        normalise_entry(raw)
    assert f"“{raw.strip()}”" in str(err.value) or str(err.value).startswith("Type a")


def test_a_pasted_list_is_split_deduplicated_and_reports_each_bad_entry():
    entries, errors = parse_allow_list("contoso.com, CONTOSO.com\nboss@gmail.com;bad..example  fabrikam.example")
    assert entries == [("domain", "contoso.com"), ("address", "boss@gmail.com"), ("domain", "fabrikam.example")]
    assert len(errors) == 1 and "bad..example" in errors[0]
