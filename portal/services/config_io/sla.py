"""The configuration file's service levels: an MSP's SLA policies (on its top-level client entry,
`sla_policies`), and the policy a client, mailbox or route chose, by name (`sla_policy`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Mailbox, Route, SlaPolicy, User
from portal.services import ValidationError, sla
from portal.services.config_io.fileformat import SLA_POLICY_KEYS, ConfigError, fail


def export_policies(msp_id: int) -> list[dict]:
    return [{k: getattr(p, k) for k in SLA_POLICY_KEYS} for p in sla.policies(msp_id)]


def policy_name(row: Client | Mailbox | Route, names: dict[int, str]) -> str | None:
    return names.get(row.sla_policy_id) if row.sla_policy_id else None


def policy_names(msp_id: int | None) -> dict[int, str]:
    """Policy id → name, of one MSP or (None) of every MSP, for the export."""
    query = select(SlaPolicy.id, SlaPolicy.name)
    if msp_id is not None:
        query = query.where(SlaPolicy.msp_id == msp_id)
    return dict(db.session.execute(query).all())


def import_policies(msp: Client, items: Any, actor: User | None, where: str) -> list[tuple[str, bool, bool]]:
    """Create or change each policy named in the file (none is deleted): (name, created, changed)."""
    if not isinstance(items, list):
        raise ConfigError({where: ["This must be a list (entries starting with -)."]})
    done = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError({at: ["Each entry must be a mapping of keys and values."]})
        existing = sla.get_policy_by_name(msp.id, " ".join(str(item.get("name") or "").split()))
        before = {k: getattr(existing, k) for k in SLA_POLICY_KEYS} if existing is not None else None
        values = {k: item[k] for k in SLA_POLICY_KEYS if k in item}
        values.setdefault("warning_percent", 80)
        try:
            policy = sla.save_policy(msp.id, values, actor, existing)
        except ValidationError as exc:
            raise fail(at, exc) from None
        done.append((policy.name, existing is None,
                     existing is None or before != {k: getattr(policy, k) for k in SLA_POLICY_KEYS}))
    return done


def choose_named(row: Client | Mailbox | Route, name: Any, msp_id: int, actor: User | None, where: str) -> bool:
    """Give the row the policy of this name (empty: none, i.e. inherit or the client's)."""
    policy = None
    if name not in (None, ""):
        policy = sla.get_policy_by_name(msp_id, str(name))
        if policy is None:
            raise ConfigError({where: [f"No SLA policy is called {name!r}: add it under the MSP's sla_policies."]})
    return sla.choose(row, policy, actor, msp_id)
