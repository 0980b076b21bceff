"""Flask commands: `flask users …`, `flask demo …` (and `flask db …` from Flask-Migrate)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from portal.crypto import SecretError
from portal.extensions import db
from portal.inbound import context, fetch
from portal.inbound.fetch_now import FetchRefused, fetch_now
from portal.inbound.replay import Pipeline, context_for, replay
from portal.mail.explain import iter_explain_paths
from portal.mail.refs import RefFormat
from portal.models import Message, RawMessage
from portal.services import ValidationError, commit
from portal.services import clients as client_svc
from portal.services import users as user_svc
from portal.services.config_io import dump, export_config, import_config, load
from portal.services.demo import DEMO_ADMIN, DEMO_PASSWORD, demo_mailbox, seed_demo, seed_samples
from portal.services.mailbox_checks import test_mailbox
from portal.services.mailboxes import get_mailbox_by_address, rotate_secrets
from portal.unit_of_work import commits

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
@commits
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
    click.echo(f"Created admin {user.email} for {msp.name}.")


@demo_cli.command("seed")
@commits
def seed() -> None:
    """Create the demo MSP, its admin and mailbox unless they exist, and run the sample emails
    through the pipeline (again: each is a duplicate and creates nothing)."""
    if current_app.config["ENV_NAME"] == "production":
        click.echo("error: the demo MSP has a published password; it is not seeded in production.", err=True)
        raise SystemExit(1)
    msp, _admin, created = seed_demo()
    mailbox, _new = demo_mailbox(msp, keys=_keys())
    click.echo(("Seeded" if created else "Found") + f" the demo MSP {msp.name!r}.")
    # Each sample is committed as it is decided, as `mail ingest` commits each message.
    results = seed_samples(mailbox, secret=_secret(), host=current_app.config["TIDEMARK_MAIL_HOST"], commit=commit)
    click.echo(f"Sample emails into {mailbox.address} (a draft that sends nothing):")
    for r in results:
        click.echo(f"  {r.name}: {r.outcome}" + (f" {r.reference}" if r.reference else "")
                   + (f" ({r.error})" if r.error else ""))
    click.echo(f"Sign in as {DEMO_ADMIN} with the password {DEMO_PASSWORD}")




# --- configuration as code ----------------------------------------------------------------------

config_cli = AppGroup("config", help="Import and export the configuration as YAML.")
secrets_cli = AppGroup("secrets", help="Secrets stored encrypted in the database.")
mail_cli = AppGroup("mail", help="Run email through the pipeline from the command line.")


def _keys() -> str:
    return current_app.config["TIDEMARK_ENCRYPTION_KEY"]


def _secret() -> bytes:
    return current_app.config["SECRET_KEY"].encode()


@config_cli.command("import")
@click.argument("path", type=click.File("r"))
@commits
def config_import(path) -> None:
    """Create or update clients, users and mailboxes from a YAML file (safe to run again)."""
    try:
        # No more than the limit is read: one character is at least one byte, so load() refuses a bigger file.
        counts = import_config(load(path.read(current_app.config["TIDEMARK_CONFIG_MAX_BYTES"] + 1)), keys=_keys())
    except ValidationError as exc:
        _fail(exc)
    click.echo(f"Imported: {counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged.")


@config_cli.command("export")
@click.option("--with-secrets", is_flag=True,
              help="Include mailbox passwords and OAuth2 client secrets in plain text (never tokens).")
def config_export(with_secrets: bool) -> None:
    """Print the whole configuration as YAML, in the format `config import` reads."""
    click.echo(dump(export_config(keys=_keys(), with_secrets=with_secrets)), nl=False)


@secrets_cli.command("rotate")
@commits
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the first key of TIDEMARK_ENCRYPTION_KEY."""
    try:
        count = rotate_secrets(_keys())
    except SecretError as exc:
        db.session.rollback()
        click.echo(f"error: {exc}; nothing was changed.", err=True)
        raise SystemExit(1) from None
    click.echo(f"Re-encrypted {count} secret(s) with the first key.")


def _mail_sources(paths: tuple[str, ...]):
    """(name, bytes) for each .eml file, every file under a directory, or `-` for stdin."""
    for p in paths:
        if p == "-":
            yield "-", sys.stdin.buffer.read()
            continue
        path = Path(p)
        if path.is_dir():
            for f in sorted(x for x in path.rglob("*") if x.is_file()):
                yield str(f), f.read_bytes()
        elif path.is_file():
            yield str(path), path.read_bytes()
        else:
            raise click.BadParameter(f"{p} is neither a file nor a directory", param_hint="PATH")


def _mailbox(address: str):
    try:
        mailbox = get_mailbox_by_address(address)
    except ValidationError as exc:
        _fail(exc)
    if mailbox is None:
        click.echo(f"error: there is no mailbox {address}", err=True)
        raise SystemExit(1)
    return mailbox


@mail_cli.command("ingest")
@click.option("--mailbox", "address", required=True, help="Address of the mailbox the mail arrived in.")
@click.argument("paths", nargs=-1, required=True)
@commits
def mail_ingest(address: str, paths: tuple[str, ...]) -> None:
    """Run email through the whole pipeline; one JSON line per message."""
    mailbox = _mailbox(address)
    ctx = context.IngestContext(mailbox, _secret(), current_app.config["TIDEMARK_MAIL_HOST"])
    for name, raw in _mail_sources(paths):
        stored, result = fetch.ingest_given(ctx, raw, server_id=f"cli:{uuid.uuid4().hex}", folder="cli")
        # Each message on its own, as a fetch does: its line is printed once it is kept, and a
        # later message that fails takes nothing back.
        commit()
        click.echo(json.dumps(_mail_line(name, stored, result.message if result else None), ensure_ascii=False))


@mail_cli.command("fetch")
@click.argument("address")
def mail_fetch(address: str) -> None:
    """Fetch one mailbox now, whatever its schedule; one JSON line per message it decided
    (the keys of `mail ingest`). Exits 1 when the server could not be reached."""
    mailbox = _mailbox(address)
    cfg = current_app.config
    # Not @commits: a fetch commits as it goes (each batch before the server is told), as a job does.
    try:
        fetched = fetch_now(mailbox, keys=_keys(), secret=_secret(), commit=commit, ca_file=cfg["TIDEMARK_CA_FILE"],
                            host=cfg["TIDEMARK_MAIL_HOST"])
    except FetchRefused as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    for stored, message in fetched.decided:
        name = f"{stored.folder}/{stored.server_id}" if stored.folder else stored.server_id
        click.echo(json.dumps(_mail_line(name, stored, message), ensure_ascii=False))
    if fetched.report.error:
        click.echo(f"error: {fetched.report.error}", err=True)
        raise SystemExit(1)


def _mail_line(name: str, stored: RawMessage, message: Message | None) -> dict:
    """The JSON line `mail ingest` and `mail fetch` print for one email (None: deciding it failed)."""
    if message is None:
        return {"file": name, "outcome": "failed", "ticket": None, "client": None, "status": None, "body": None,
                "trace": [stored.last_error]}
    t = message.ticket
    return {"file": name, "outcome": message.outcome, "ticket": t.reference if t else None,
            "client": t.client.name if t else None, "status": t.status if t else None,
            "body": message.body_text if t else None, "trace": list(message.trace or [])}


@mail_cli.command("reprocess")
@click.argument("raw_id", type=int)
@commits
def mail_reprocess(raw_id: int) -> None:
    """Run a stored raw message (its id in raw_messages) through the pipeline again."""
    stored = db.session.get(RawMessage, raw_id)
    if stored is None or stored.mailbox is None:
        click.echo(f"error: there is no stored message {raw_id} with a mailbox", err=True)
        raise SystemExit(1)
    try:
        result = replay(stored, context_for(stored, Pipeline(_secret())))
    except ValidationError as exc:
        _fail(exc)
    t = result.ticket
    click.echo(json.dumps({"raw": raw_id, "outcome": result.outcome, "ticket": t.reference if t else None,
                           "status": t.status if t else None, "trace": result.trace}, ensure_ascii=False))


@mail_cli.command("test-connection")
@click.argument("address")
def mail_test_connection(address: str) -> None:
    """Connect to a mailbox's servers now, as its direction uses them, and say what happened (the answer is kept)."""
    mailbox = _mailbox(address)
    result = test_mailbox(mailbox, _keys(), ca_file=current_app.config["TIDEMARK_CA_FILE"])
    # Here, not @commits: the exit status says whether the server answered, and the answer is
    # kept either way.
    commit()
    click.echo(result.message)
    raise SystemExit(0 if result.ok else 1)


@mail_cli.command("explain")
@click.option("--waterline", "waterlines", multiple=True, help="A client's cut-off text (repeatable).")
@click.option("--subject-format", default="[{ref}]", show_default=True, help="Where the reference sits in subjects.")
@click.option("--prefix", default="T", show_default=True, help="Ticket reference prefix.")
@click.argument("paths", nargs=-1, required=True)
def mail_explain(waterlines: tuple[str, ...], subject_format: str, prefix: str, paths: tuple[str, ...]) -> None:
    """What the email logic reads in each message, one JSON line per message (nothing is saved)."""
    try:
        fmt = RefFormat(prefix=prefix, subject_format=subject_format)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    for record in iter_explain_paths(list(paths), waterlines=list(waterlines), ref_format=fmt, secret=_secret()):
        click.echo(json.dumps(record, ensure_ascii=False, default=str))


def register(app: Flask) -> None:
    for group in (users_cli, demo_cli, config_cli, secrets_cli, mail_cli):
        app.cli.add_command(group)
