"""Clients: the MSP tree, allow-lists, inherited settings. Flush, never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import available_timezones

from sqlalchemy import func, select

from portal import tenancy
from portal.extensions import db
from portal.mail.language import LANGUAGES
from portal.models import INHERITED_SETTINGS, AllowEntry, Client, User
from portal.services import ValidationError, audit
from portal.services.allowlist import parse_allow_list

CODE_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{0,19}$")
SETTING_LABELS = {"waterline": "Waterline", "timezone": "Time zone", "language": "Language of its mail"}


@dataclass
class ClientInput:
    """What a person may set on a client, as typed (the service validates and normalises)."""

    name: str
    code: str = ""
    waterline: str = ""
    timezone: str = ""
    language: str = ""
    allow: str | list[str] = ""
    reference_prefix: str | None = None  # MSP roots only
    errors: dict[str, list[str]] = field(default_factory=dict)


# --- queries ---------------------------------------------------------------------------------


def get_client(msp_id: int, client_id: int) -> Client | None:
    """The client with this id if it belongs to this MSP's tree, else None (views answer 404)."""
    return db.session.scalar(select(Client).where(Client.id == client_id, Client.msp_id == msp_id))


def get_client_by_name(msp_id: int, name: str) -> Client | None:
    return db.session.scalar(select(Client).where(Client.msp_id == msp_id, Client.name == name))


# One answer for every name an MSP may not take: it must not learn whose name it is.
NAME_TAKEN = "This name cannot be used; choose another."


def msp_name_key(name: str) -> str:
    """What makes two MSP names the same: case and spacing do not count."""
    return " ".join(name.split()).casefold()


def get_msp_by_name(name: str) -> Client | None:
    """The MSP with this name, whatever its case and spacing."""
    return db.session.scalar(select(Client).where(Client.parent_id.is_(None), Client.name_key == msp_name_key(name)))


def msp_count() -> int:
    """How many MSPs this installation hosts (root clients)."""
    return db.session.scalar(select(func.count()).select_from(Client).where(Client.parent_id.is_(None)))


def tree_clients(msp_id: int) -> list[Client]:
    return list(db.session.scalars(select(Client).where(Client.msp_id == msp_id)))


@dataclass
class TreeNode:
    client: Client
    depth: int
    disabled_by: Client | None  # the nearest disabled ancestor, or the client itself


def client_tree(msp_id: int, query: str = "") -> list[TreeNode]:
    """The MSP tree depth-first, siblings by name. With a query, the clients whose name or code
    contains it, with their ancestors so each still shows where it sits."""
    clients = tree_clients(msp_id)
    children: dict[int | None, list[Client]] = {}
    for c in clients:
        children.setdefault(c.parent_id, []).append(c)
    for kids in children.values():
        kids.sort(key=lambda c: c.name.lower())
    keep: set[int] | None = None
    if query:
        q = query.lower()
        by_id = {c.id: c for c in clients}
        keep = set()
        for c in clients:
            if q in c.name.lower() or q in (c.code or "").lower():
                node: Client | None = c
                while node is not None and node.id not in keep:
                    keep.add(node.id)
                    node = by_id.get(node.parent_id)
    out: list[TreeNode] = []

    def walk(parent_id: int | None, depth: int, disabled_by: Client | None) -> None:
        for c in children.get(parent_id, []):
            here = disabled_by or (c if c.disabled else None)
            if keep is None or c.id in keep:
                out.append(TreeNode(c, depth, here))
            walk(c.id, depth + 1, here)

    roots = [c for c in clients if c.parent_id is None]
    for root in roots:
        here = root if root.disabled else None
        if keep is None or root.id in keep:
            out.append(TreeNode(root, 0, here))
        walk(root.id, 1, here)
    return out


def ancestors(client: Client) -> list[Client]:
    """Parent first, MSP root last."""
    return tenancy.lineage(client)[1:]


def descendant_ids(client: Client) -> set[int]:
    return tenancy.descendant_ids(tree_clients(client.msp_id), client.id)


@dataclass
class EffectiveSetting:
    name: str
    label: str
    value: str | None
    source: Client | None  # the client that sets it; None = the built-in default
    own: bool


def effective_settings(client: Client) -> list[EffectiveSetting]:
    chain = tenancy.lineage(client)
    out = []
    for name in INHERITED_SETTINGS:
        source = tenancy.nearest(chain, name)
        value = getattr(source, name) if source else None
        if name == "language" and value:
            value = LANGUAGES.get(value, value)
        out.append(EffectiveSetting(name, SETTING_LABELS[name], value, source, source is client))
    return out



def disabled_by(client: Client) -> Client | None:
    """The client whose disabled flag switches this one off (itself or an ancestor), or None."""
    return tenancy.disabled_by(tenancy.lineage(client))


# --- validation ------------------------------------------------------------------------------


def _validate(msp_id: int | None, data: ClientInput, client: Client | None) -> dict:
    """Normalised values, or ValidationError naming each wrong field."""
    errors: dict[str, list[str]] = {}
    name = " ".join(data.name.split())
    if not name:
        errors.setdefault("name", []).append("Give the client a name.")
    elif len(name) > 200:
        errors.setdefault("name", []).append("The name is longer than 200 characters.")
    elif client.is_msp if client is not None else msp_id is None:
        other = get_msp_by_name(name)
        if other is not None and other is not client:
            errors.setdefault("name", []).append(NAME_TAKEN)
    elif msp_id is not None:
        other = get_client_by_name(msp_id, name)
        if other is not None and other is not client:
            errors.setdefault("name", []).append(f"Another client in this tree is already called {name}.")

    code = data.code.strip().upper() or None
    if code is not None:
        if not CODE_PATTERN.match(code):
            errors.setdefault("code", []).append(
                "The code is 1 to 20 letters and digits, starting with a letter (e.g. CONTOSO)."
            )
        elif msp_id is not None:
            other = db.session.scalar(select(Client).where(Client.msp_id == msp_id, Client.code == code))
            if other is not None and other is not client:
                errors.setdefault("code", []).append(f"{other.name} already uses the code {code}.")

    tz = data.timezone.strip() or None
    if tz is not None and tz not in _timezones():
        errors.setdefault("timezone", []).append(f"{tz} is not a time zone. Pick one from the list, e.g. Europe/Berlin.")

    language = data.language.strip() or None
    if language is not None and language not in LANGUAGES:
        errors.setdefault("language", []).append(
            f"{language} is not a language Tidemark writes mail in. Choose one of: {', '.join(LANGUAGES)}.")

    waterline = data.waterline.strip() or None
    if waterline is not None and len(waterline) > 2000:
        errors.setdefault("waterline", []).append("The waterline is longer than 2,000 characters.")

    entries, entry_errors = parse_allow_list(data.allow)
    if entry_errors:
        errors.setdefault("allow", []).extend(entry_errors)
    elif msp_id is not None and entries:
        # Two clients claiming one sender would make routing depend on chance.
        taken = db.session.execute(
            select(AllowEntry.value, Client.name)
            .join(Client, AllowEntry.client_id == Client.id)
            .where(AllowEntry.msp_id == msp_id, AllowEntry.value.in_([v for _, v in entries]))
            .where(AllowEntry.client_id != (client.id if client else -1))
        ).all()
        for value, other_name in taken:
            errors.setdefault("allow", []).append(f"{value} is already on the allow-list of {other_name}.")

    prefix = None
    if data.reference_prefix is not None:
        prefix = data.reference_prefix.strip().upper()
        if not CODE_PATTERN.match(prefix):
            errors.setdefault("reference_prefix", []).append(
                "The reference prefix is 1 to 20 letters and digits, starting with a letter."
            )
    if errors:
        raise ValidationError(errors)
    return {"name": name, "code": code, "timezone": tz, "language": language, "waterline": waterline, "entries": entries, "prefix": prefix}


_TZ_CACHE: set[str] | None = None


def _timezones() -> set[str]:
    global _TZ_CACHE
    if _TZ_CACHE is None:
        _TZ_CACHE = available_timezones()
    return _TZ_CACHE


def timezone_names() -> list[str]:
    return sorted(_timezones())


def snapshot(client: Client) -> dict:
    """The audited fields of a client, as plain values."""
    snap = {
        "name": client.name,
        "code": client.code,
        "parent": client.parent.name if client.parent else None,
        "waterline": client.waterline,
        "timezone": client.timezone,
        "language": client.language,
        "disabled": client.disabled,
        "allow-list": sorted(e.value for e in client.allow_entries),
    }
    if client.is_msp:
        snap["reference prefix"] = client.reference_prefix
    return snap


def _apply(client: Client, clean: dict) -> None:
    client.name = clean["name"]
    if client.parent is None:  # not is_msp: a new sub-client has its parent but no parent_id before the flush
        client.name_key = msp_name_key(clean["name"])
    client.code = clean["code"]
    client.timezone = clean["timezone"]
    client.language = clean["language"]
    client.waterline = clean["waterline"]
    if clean["prefix"] is not None and client.is_msp:
        client.reference_prefix = clean["prefix"]
    wanted = dict((v, k) for k, v in clean["entries"])
    for entry in list(client.allow_entries):
        if entry.value not in wanted:
            client.allow_entries.remove(entry)
    have = {e.value for e in client.allow_entries}
    for value, kind in wanted.items():
        if value not in have:
            client.allow_entries.append(AllowEntry(msp_id=client.msp_id, kind=kind, value=value))


# --- writes ----------------------------------------------------------------------------------


def create_msp(data: ClientInput, actor: User | None = None) -> Client:
    clean = _validate(None, data, None)
    msp = Client(name=clean["name"], name_key=msp_name_key(clean["name"]), parent_id=None,
                 reference_prefix=clean["prefix"] or "T")
    db.session.add(msp)
    db.session.flush()
    msp.msp_id = msp.id
    _apply(msp, clean)
    db.session.flush()
    audit.record(actor, msp.id, "client", msp.id, "created", audit.diff({}, snapshot(msp)))
    return msp


def create_client(parent: Client, data: ClientInput, actor: User | None) -> Client:
    clean = _validate(parent.msp_id, data, None)
    client = Client(msp_id=parent.msp_id, parent=parent, name=clean["name"])
    db.session.add(client)
    _apply(client, clean)
    db.session.flush()
    audit.record(actor, client.msp_id, "client", client.id, "created", audit.diff({}, snapshot(client)))
    return client


def update_client(client: Client, data: ClientInput, actor: User | None) -> dict:
    """Returns the changes made (field -> [old, new]); nothing is recorded when nothing changed."""
    before = snapshot(client)
    clean = _validate(client.msp_id, data, client)
    _apply(client, clean)
    db.session.flush()
    changes = audit.diff(before, snapshot(client))
    if changes:
        audit.record(actor, client.msp_id, "client", client.id, "updated", changes)
    return changes


def move_client(client: Client, new_parent: Client, actor: User | None) -> None:
    if client.is_msp:
        raise ValidationError({"parent": ["An MSP has no parent."]})
    if new_parent.msp_id != client.msp_id:
        raise ValidationError({"parent": ["The new parent is not in this tree."]})
    if new_parent.id == client.id or new_parent.id in descendant_ids(client):
        raise ValidationError({"parent": ["A client cannot sit below itself or its own sub-clients."]})
    if new_parent.id == client.parent_id:
        return
    before = snapshot(client)
    client.parent = new_parent
    db.session.flush()
    audit.record(actor, client.msp_id, "client", client.id, "moved", audit.diff(before, snapshot(client)))


def set_client_disabled(client: Client, disabled: bool, actor: User | None) -> bool:
    """Returns whether anything changed. An MSP root cannot be disabled from its own portal."""
    if client.is_msp and disabled:
        raise ValidationError({"": ["The MSP itself cannot be disabled; disable its sub-clients instead."]})
    if client.disabled == disabled:
        return False
    client.disabled = disabled
    db.session.flush()
    audit.record(
        actor, client.msp_id, "client", client.id, "disabled" if disabled else "enabled",
        {"disabled": [not disabled, disabled]},
    )
    return True
