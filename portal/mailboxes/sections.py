"""The mailbox form's sections (native <details>): which fields each holds, whether it is open
and the one line its summary shows of the current values. The essentials are open; a section
with an error is open after a refused save, so nobody hunts for the message."""

from __future__ import annotations

from dataclasses import dataclass

from portal.display import field_errors


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    fields: tuple[str, ...]
    essential: bool = False


OAUTH_FIELDS = ("oauth_provider", "oauth_flow", "oauth_tenant", "oauth_client_id", "oauth_client_secret",
                "oauth_secret_expires", "oauth_certificate", "oauth_authorize_url", "oauth_token_url", "oauth_scopes")
SECTIONS = (
    Section("addresses", "Addresses", ("address", "aliases", "name", "direction"), essential=True),
    Section("server", "Server", ("protocol", "security", "host", "port", "api_url", "username", "auth", "password",
                                 *OAUTH_FIELDS, "shared_mailbox", "verify_tls"), essential=True),
    Section("fetching", "Fetching", ("folder_picks", "folders", "after_action_imap", "processed_folder", "after_action_pop3",
                                     "poll_interval", "timeout", "max_tries", "cool_off", "skip_windows",
                                     "sync_start_date", "max_message_size")),
    Section("tickets", "New tickets", ("client_id", "default_status", "default_priority", "default_type",
                                       "sla_policy_id", "acknowledge", "acknowledgement_variant", "accept_only_allowed",
                                       "automatic_mail", "ignore_senders",
                                       "ignore_subjects", "keep_raw_attachment")),
    Section("replies", "Replies", ("response_address", "reply_to", "plus_addressing", "embed_images")),
    Section("status", "Status", ("status", "alert_recipients")),
)
BY_KEY = {s.key: s for s in SECTIONS}


def _choice(field) -> str:
    """The label of a select's current value: the first choice without one (as the browser shows
    it), the value itself when it is not offered."""
    labels = [(str(v), label) for v, label, *_ in field.iter_choices()]
    if field.data in (None, "") and labels:
        return labels[0][1]
    return dict(labels).get(str(field.data), str(field.data or ""))


def _count(text: str | None, one: str, many: str) -> str:
    n = len([line for line in (text or "").splitlines() if line.strip()])
    return "" if not n else f"{n} {one if n == 1 else many}"


def _digest_addresses(form) -> list[str]:
    return [(form.address.data or "").strip() or "no address yet",
            _count(form.aliases.data, "alias", "aliases"), _choice(form.direction)]


def _digest_server(form) -> list[str]:
    protocol = form.protocol.data or "imap"
    if protocol == "lmtp":
        return [_choice(form.protocol)]
    if protocol == "graph":
        where = (form.api_url.data or "").strip()
    else:
        host, port = (form.host.data or "").strip(), (str(form.port.data or "")).strip()
        where = (f"{host}:{port}" if port else host) if host else "no server yet"
    signed = "OAuth2" if form.auth.data == "oauth2" else "password"
    security = "" if protocol == "graph" else _choice(form.security)
    return [_choice(form.protocol), where, security, signed]


def _digest_fetching(form) -> list[str]:
    if form.direction.data == "outgoing":
        return ["not fetched: the mailbox is outgoing only"]
    if form.protocol.data == "lmtp":
        largest = (str(form.max_message_size.data or "")).strip()
        return ["pushed by your mail server", f"up to {largest} MB" if largest else ""]
    pop3 = form.protocol.data == "pop3"
    typed = [line.strip() for line in (form.folders.data or "").splitlines() if line.strip()]
    folders = ", ".join(dict.fromkeys([*(form.folder_picks.data or []), *typed]))
    after = _choice(form.after_action_pop3 if pop3 else form.after_action_imap)
    if not pop3 and form.after_action_imap.data == "move" and (form.processed_folder.data or "").strip():
        after = f"move to {form.processed_folder.data.strip()}"
    every = (str(form.poll_interval.data or "")).strip()
    largest = (str(form.max_message_size.data or "")).strip()
    return ["" if pop3 else folders, f"every {every} s" if every else "", after,
            f"up to {largest} MB" if largest else ""]


def _digest_tickets(form) -> list[str]:
    if form.direction.data == "outgoing":
        return ["none: the mailbox is outgoing only"]
    return [_choice(form.client_id), form.default_status.data or "", form.default_priority.data or "",
            (form.default_type.data or "").strip(),
            f"SLA {_choice(form.sla_policy_id)}" if form.sla_policy_id.data else "",
            (f"acknowledged ({form.acknowledgement_variant.data})" if form.acknowledgement_variant.data
             else "acknowledged") if form.acknowledge.data else "not acknowledged",
            "only allowed senders" if form.accept_only_allowed.data else ""]


def _digest_replies(form) -> list[str]:
    reply_from = (form.response_address.data or "").strip() or (form.address.data or "").strip()
    reply_to = (form.reply_to.data or "").strip()
    through = "through the default gateway (incoming only)" if form.direction.data == "incoming" else ""
    return [f"from {reply_from}" if reply_from else "", f"Reply-To {reply_to}" if reply_to else "", through,
            f"plus-addressing {form.plus_addressing.data or 'off'}",
            "images embedded" if form.embed_images.data == "inline" else ""]


def _digest_status(form) -> list[str]:
    return [_choice(form.status), _count(form.alert_recipients.data, "alert recipient", "alert recipients")]


DIGESTS = {"addresses": _digest_addresses, "server": _digest_server, "fetching": _digest_fetching,
           "tickets": _digest_tickets, "replies": _digest_replies, "status": _digest_status}


def digest(form, key: str) -> str:
    """One line of a section's current values, e.g. "IMAP · mail.example.com:993 · SSL/TLS · password"."""
    return " · ".join(part for part in DIGESTS[key](form) if part)


def has_error(form, key: str) -> bool:
    return any(field_errors(form, name) for name in BY_KEY[key].fields)


def is_open(form, key: str) -> bool:
    """Open: an essential section, or one holding a field with an error."""
    return BY_KEY[key].essential or has_error(form, key)


@dataclass(frozen=True)
class Shown:
    key: str
    title: str
    open: bool
    digest: str


def shown(form, key: str) -> Shown:
    """Section `key` of `form` as the page shows it."""
    return Shown(key, BY_KEY[key].title, is_open(form, key), digest(form, key))
