"""MSP names are unique across the installation, ignoring case and spacing (issue #13): the
command line and the configuration import find an MSP by name, so two of one name would send
them to the wrong tree."""

from sqlalchemy import func, select

from portal.models import Client, User

NEUTRAL = "This name cannot be used; choose another."


def test_an_msp_cannot_rename_itself_to_another_msps_name(world, browser, db):
    world.msp("Acme MSP")
    theirs = world.msp("Beta MSP")
    world.user(theirs, email="eve@beta.example")
    browser.sign_in("eve@beta.example")
    for taken in ("Acme MSP", "  acme   msp ", "ACME MSP"):
        resp = browser.post(f"/clients/{theirs.id}/edit", {"name": taken, "reference_prefix": "T"}, htmx=True)
        body = resp.get_data(as_text=True)
        assert resp.status_code == 422 and NEUTRAL in body and "Acme MSP" not in body.replace(taken, ""), body
    assert db.session.get(Client, theirs.id).name == "Beta MSP"
    ok = browser.post(f"/clients/{theirs.id}/edit", {"name": "beta   msp", "reference_prefix": "T"}, htmx=True)
    assert ok.status_code in (200, 303) and ok.headers.get("HX-Redirect"), ok.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Client, theirs.id).name == "beta msp"


def test_a_new_msp_cannot_take_a_name_in_another_spelling(world):
    import pytest

    from portal.services import ValidationError
    from portal.services import clients as svc

    world.msp("Acme MSP")
    with pytest.raises(ValidationError) as refused:
        svc.create_msp(svc.ClientInput(name="ACME  msp"))
    assert refused.value.errors == {"name": [NEUTRAL]}


def test_the_command_line_finds_the_msp_whatever_the_case_and_spacing(app, db, world):
    acme = world.msp("Acme MSP")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create-admin", "root@acme.example", "--msp", " acme  MSP",
                                 "--password", "long enough pw"])
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(func.count()).select_from(Client).where(Client.parent_id.is_(None))) == 1
    assert db.session.scalar(select(User)).msp_id == acme.id


def test_config_import_updates_the_msp_whatever_the_case_and_spacing(app, db, world, tmp_path):
    acme = world.msp("Acme MSP")
    path = tmp_path / "c.yaml"
    path.write_text("clients:\n  - name: ACME  MSP\n    children:\n      - name: Contoso\n")
    result = app.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert result.exit_code == 0, result.output
    roots = db.session.scalars(select(Client).where(Client.parent_id.is_(None))).all()
    assert [r.id for r in roots] == [acme.id]
    assert db.session.scalar(select(Client).where(Client.name == "Contoso")).msp_id == acme.id


def test_the_migration_renames_msps_that_share_a_name(app, db, world):
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    ids = [world.msp(n).id for n in ("Acme MSP", "Other", "Third")]
    db.session.remove()
    downgrade(revision="0006")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE clients SET name = 'acme   MSP' WHERE id = :id"), {"id": ids[1]})
        conn.execute(text("UPDATE clients SET name = 'ACME MSP' WHERE id = :id"), {"id": ids[2]})
    db.engine.dispose()
    upgrade()
    db.engine.dispose()
    names = {c.id: (c.name, c.name_key) for c in db.session.scalars(select(Client))}
    assert names == {ids[0]: ("Acme MSP", "acme msp"), ids[1]: ("acme MSP (2)", "acme msp (2)"),
                     ids[2]: ("ACME MSP (3)", "acme msp (3)")}


def test_sub_clients_of_two_msps_may_share_a_name(world, db):
    for name in ("Acme MSP", "Beta MSP"):
        world.client(world.msp(name), "Contoso")
    keys = db.session.scalars(select(Client.name_key).where(Client.parent_id.is_not(None))).all()
    assert keys == [None, None]
