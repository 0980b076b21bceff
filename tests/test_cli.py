from sqlalchemy import func, select

from portal.models import Client, User


def test_create_admin_creates_the_msp_when_missing_and_refuses_a_short_password(app, db):
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["users", "create-admin", "root@new.example", "--msp", "New MSP", "--password", "short"])
    assert bad.exit_code == 1 and "at least 10 characters" in bad.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0  # nothing half-made
    ok = runner.invoke(args=["users", "create-admin", "Root@New.example", "--msp", "New MSP", "--password", "long enough pw"])
    assert ok.exit_code == 0, ok.output
    user = db.session.scalar(select(User))
    assert user.email == "root@new.example" and user.role == "admin" and user.msp.name == "New MSP"
    again = runner.invoke(args=["users", "create-admin", "root@new.example", "--msp", "New MSP", "--password", "long enough pw"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_demo_seed_is_idempotent(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo", "seed"])
    second = runner.invoke(args=["demo", "seed"])
    assert "Seeded" in first.output and "Found" in second.output
    assert "admin@demo.example" in second.output
    names = sorted(db.session.scalars(select(Client.name)))
    assert names == ["Contoso", "Demo MSP", "Fabrikam"]
    assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_demo_seed_refuses_in_production(app, db):
    app.config["ENV_NAME"] = "production"
    result = app.test_cli_runner().invoke(args=["demo", "seed"])
    assert result.exit_code == 1 and "not seeded in production" in result.output
    assert db.session.scalar(select(func.count()).select_from(Client)) == 0
