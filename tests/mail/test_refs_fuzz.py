"""Reference extraction on random text: it never raises, finds only well-formed references, and
always finds what our own mail writes (subject tag, hidden token, plus address), whatever text
surrounds it; a token or tag signed with another key is never taken."""

import re

from hypothesis import given
from hypothesis import strategies as st

from portal.mail.refs import RefFormat
from tests.fuzzing import fuzz

FORMATS = st.sampled_from([RefFormat(), RefFormat(prefix="ACME"), RefFormat(subject_format="#{ref}"),
                           RefFormat(prefix="Case", subject_format="(Ticket {ref})")])
TEXT = st.text(max_size=400)
NUMBER = st.integers(min_value=1, max_value=10**9)
SECRET = b"the installation's key"
FAST = fuzz(150)


def well_formed(fmt: RefFormat, ref: str) -> bool:
    return re.fullmatch(rf"{fmt.prefix.upper()}-(0|[1-9][0-9]*)", ref) is not None


@FAST
@given(FORMATS, TEXT, TEXT)
def test_random_text_gives_only_well_formed_references(fmt, subject, body):
    found = fmt.refs_in_subject(subject) + fmt.refs_in_body(body) + fmt.refs_in_tokens(body, SECRET)
    assert all(well_formed(fmt, ref) for ref in found)
    assert fmt.refs_in_recipients([subject, body, "a@b.example"], SECRET) == []


@FAST
@given(FORMATS, TEXT, NUMBER)
def test_our_subject_tag_is_always_found_again(fmt, subject, number):
    ref = fmt.ref(number)
    assert ref in fmt.refs_in_subject(fmt.subject_with_ref(subject, ref))
    assert ref in fmt.refs_in_subject("Re: AW: " + fmt.subject_with_ref(subject, ref))


@FAST
@given(FORMATS, TEXT, TEXT, NUMBER)
def test_our_token_is_found_in_any_surroundings_and_only_with_our_key(fmt, before, after, number):
    ref = fmt.ref(number)
    body = f"{before}\n{fmt.token(ref, SECRET)}\n{after}"
    assert ref in fmt.refs_in_tokens(body, SECRET)
    assert ref not in fmt.refs_in_tokens(body, b"another installation")


@FAST
@given(FORMATS, st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True), NUMBER)
def test_a_plus_address_names_its_ticket_and_a_forged_one_is_marked(fmt, local, number):
    ref = fmt.ref(number)
    ours = fmt.plus_address(f"{local}@msp.example", ref, SECRET)
    assert fmt.plus_tags([ours], SECRET) == [(ref, True)]
    forged = fmt.plus_address(f"{local}@msp.example", ref, b"guessed")
    assert fmt.plus_tags([forged], SECRET) == [(ref, False)]
    assert fmt.refs_in_recipients([forged], SECRET) == []
