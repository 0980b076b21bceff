"""Canned responses: inherited down the client tree like templates, checked, sanitised, audited."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, CannedResponse
from portal.services import ValidationError, canned, commit


@pytest.fixture
def tree(world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso")
    branch = world.client(contoso, "Contoso Berlin")
    other = world.msp("Other MSP")
    return msp, contoso, branch, other


def names(client):
    return [(e.response.name, e.source.name) for e in canned.in_effect(client)]


def test_a_client_sees_its_own_and_what_ancestors_share_and_the_nearer_name_wins(tree):
    msp, contoso, branch, other = tree
    canned.save(msp, name="Greeting", text="Hello from Acme", shared=True)
    canned.save(msp, name="Internal only", text="not for sub-clients", shared=False)
    canned.save(contoso, name="greeting", text="Hallo from Contoso", shared=True)
    canned.save(contoso, name="Contoso private", text="only Contoso", shared=False)
    canned.save(other, name="Theirs", text="other MSP", shared=True)
    commit()
    assert names(msp) == [("Greeting", "Acme MSP"), ("Internal only", "Acme MSP")]
    assert names(contoso) == [("Contoso private", "Contoso"), ("greeting", "Contoso")]
    # Contoso's private one stays with Contoso; its shared greeting replaces Acme's.
    assert names(branch) == [("greeting", "Contoso")]
    hidden = db.session.scalar(select(CannedResponse).where(CannedResponse.name == "Internal only"))
    assert canned.get_in_effect(branch, hidden.id) is None
    theirs = db.session.scalar(select(CannedResponse).where(CannedResponse.name == "Theirs"))
    assert canned.get_in_effect(msp, theirs.id) is None and canned.get_own(msp, theirs.id) is None


def test_name_is_required_and_unique_per_client_in_any_case(tree):
    msp, contoso, _branch, _other = tree
    canned.save(msp, name="Greeting", text="Hello")
    with pytest.raises(ValidationError) as err:
        canned.save(msp, name="  GREETING ", text="again")
    assert "already has a response called 'Greeting'" in err.value.errors["name"][0]
    with pytest.raises(ValidationError) as err:
        canned.save(msp, name=" ", text="")
    assert err.value.errors == {"name": ["Give the response a name."], "text": ["Write the response."]}
    # The same name on another client is fine (it replaces the inherited one there).
    assert canned.save(contoso, name="Greeting", text="Hallo").client_id == contoso.id


def test_body_is_sanitised_and_plain_text_is_escaped(tree):
    msp, *_ = tree
    rich = canned.save(msp, name="Rich", html='<p onclick="x()">Hi <b>there</b></p><script>alert(1)</script>'
                                              '<a href="javascript:alert(2)">x</a>')
    assert "<b>there</b>" in rich.body_html
    assert "script" not in rich.body_html and "onclick" not in rich.body_html and "javascript" not in rich.body_html
    plain = canned.save(msp, name="Plain", text="1 < 2 & <b>not bold</b>\nsecond line")
    assert plain.body_html == "1 &lt; 2 &amp; &lt;b&gt;not bold&lt;/b&gt;<br>second line"
    with pytest.raises(ValidationError) as err:
        canned.save(msp, name="Empty", html="<p> </p><script>alert(1)</script>")
    assert err.value.errors == {"text": ["Write the response."]}


def test_changes_and_removal_are_audited(world, tree):
    msp, *_ = tree
    admin = world.user(msp, email="ann@acme.example")
    response = canned.save(msp, name="Greeting", text="Hello", actor=admin)
    canned.save(msp, name="Greeting", text="Hello", actor=admin, response=response)  # no change: no entry
    canned.save(msp, name="Welcome", text="Hello", shared=False, actor=admin, response=response)
    canned.delete(response, admin)
    commit()
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "client",
                                                          AuditEntry.record_id == msp.id,
                                                          AuditEntry.action.like("canned%"))
                                 .order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == ["canned response saved", "canned response saved", "canned response removed"]
    assert entries[0].changes["name"] == [None, "Greeting"] and entries[0].actor_label == "ann@acme.example"
    assert entries[1].changes == {"name": ["Greeting", "Welcome"], "shared": [True, False]}
    assert entries[2].changes["name"] == ["Welcome", None]
    assert db.session.scalar(select(CannedResponse)) is None
