"""Flask commands: `flask users …`, `flask demo …` (and `flask db …` from Flask-Migrate)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from portal.extensions import db
from portal.services import ValidationError, commit
from portal.services import clients as client_svc
from portal.services import users as user_svc

users_cli = AppGroup("users", help="Manage the people who sign in.")
demo_cli = AppGroup("demo", help="The demo MSP for trying Tidemark out.")


def _fail(exc: ValidationError) -> None:
    db.session.rollback()
    for field, messages in exc.errors.items():
        for message in messages:
            click.echo(f"error: {field + ': ' if field else ''}{message}", err=True)
    raise SystemExit(1)


@users_cli.command("create-admin")
@click.argument("email")
@click.option("--msp", "msp_name", required=True, help="Name of the MSP; created when it does not exist.")
@click.option("--name", default="", help="The person's display name.")
@click.password_option(help="Asked for when not given.")
def create_admin(email: str, msp_name: str, name: str, password: str) -> None:
    """Create an admin user for an MSP."""
    try:
        msp = client_svc.get_msp_by_name(msp_name.strip())
        if msp is None:
            msp = client_svc.create_msp(client_svc.ClientInput(name=msp_name))
            click.echo(f"Created the MSP {msp.name}.")
        user = user_svc.create_user(msp, email, password, "admin", None, name=name)
    except ValidationError as exc:
        _fail(exc)
    commit()
    click.echo(f"Created admin {user.email} for {msp.name}.")


@demo_cli.command("seed")
def seed() -> None:
    """Create the demo MSP and its admin (does nothing when they exist)."""
    from flask import current_app

    from portal.services.demo import DEMO_ADMIN, DEMO_PASSWORD, seed_demo

    if current_app.config["ENV_NAME"] == "production":
        click.echo("error: the demo MSP has a published password; it is not seeded in production.", err=True)
        raise SystemExit(1)
    msp, _admin, created = seed_demo()
    commit()
    click.echo(("Seeded" if created else "Found") + f" the demo MSP {msp.name!r}.")
    click.echo(f"Sign in as {DEMO_ADMIN} with the password {DEMO_PASSWORD}")


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(demo_cli)
