"""Tickets as technicians work them: find, read, answer, note, change. Flush, never commit."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import mimetypes
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import Integer, column, false, func, literal_column, or_, select, text, tuple_, union_all
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.mail.compose import AddressError, parse_addresses
from portal.mail.parse import html_to_text
from portal.mail.sanitize import sanitize_html
from portal.models import Attachment, Client, Mailbox, Message, Ticket, TicketLink, User
from portal.models.base import utcnow
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.outbound.outbox import conversation_thread, notify_contact, queue_mail
from portal.services import ValidationError, audit

WORK_STATUSES = ("new", "open", "waiting", "resolved", "closed", "archived")


def get_ticket(msp_id: int, reference: str) -> Ticket | None:
    """The ticket with this reference in this MSP, else None (views answer 404)."""
    return db.session.scalar(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.reference == reference.upper()))


@dataclass
class TicketFilters:
    q: str = ""
    status: str = ""
    client_id: int | None = None
    priority: str = ""
    mailbox_id: int | None = None
    assignee_id: int | None = None  # UNASSIGNED: tickets nobody has taken
    new_information: bool = False
    errors: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.q or self.status or self.client_id or self.priority or self.mailbox_id
                    or self.assignee_id is not None or self.new_information)


TODO_STATUSES = ("new", "open", "waiting")
UNASSIGNED = 0


@dataclass(frozen=True)
class TicketSort:
    """An order of the ticket list. Grouped sorts (priority, status) list one group after the
    other, each by last activity: every group is its own index walk, so no page has to rank
    and sort the whole list."""

    key: str
    label: str
    descending: bool  # the order when first chosen; the technician may turn it round
    columns: tuple = ()
    group: object = None

    def group_values(self, filters: TicketFilters, descending: bool) -> tuple[str, ...]:
        if self.group is Ticket.priority:
            values = (filters.priority,) if filters.priority else PRIORITIES  # low → high
        else:
            values = (filters.status,) if filters.status else TODO_STATUSES  # workflow order
        return tuple(reversed(values)) if descending else tuple(values)


SORTS = {s.key: s for s in (
    TicketSort("updated", "Last activity", True, (Ticket.updated_at, Ticket.id)),
    TicketSort("created", "Created", True, (Ticket.created_at, Ticket.id)),
    TicketSort("reference", "Reference", True, (Ticket.number, Ticket.id)),
    TicketSort("priority", "Priority", True, (Ticket.updated_at, Ticket.id), group=Ticket.priority),
    TicketSort("status", "Status", False, (Ticket.updated_at, Ticket.id), group=Ticket.status),
)}
COUNT_LIMIT = 1000  # counting further costs as much as the page itself; the list says "more than"


@dataclass
class TicketPage:
    tickets: list[Ticket]
    total: int | None  # up to COUNT_LIMIT + 1; None: a common word, too many to count
    sort: TicketSort
    descending: bool
    newer: str | None = None  # cursors for the pages before and after this one
    older: str | None = None
    jumped: bool = False  # the search was a reference: this is that ticket alone

    @property
    def many(self) -> bool:
        return self.total is not None and self.total > COUNT_LIMIT


def _encode_cursor(sort: TicketSort, descending: bool, direction: str, row: Ticket) -> str:
    key = [getattr(row, sort.group.key)] if sort.group is not None else []
    for col in sort.columns:
        value = getattr(row, col.key)
        key.append(value.isoformat() if isinstance(value, datetime) else value)
    raw = json.dumps([sort.key, "desc" if descending else "asc", direction, key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: TicketSort, descending: bool) -> tuple[str, list] | None:
    """(direction, key) from a cursor made for this sort, else None (the list starts again)."""
    try:
        sort_key, order, direction, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if sort_key != sort.key or order != ("desc" if descending else "asc") or direction not in ("before", "after"):
            return None
        values = list(key)
        if sort.group is not None:
            group = values.pop(0)
            if not isinstance(group, str):
                return None
        if len(values) != len(sort.columns):
            return None
        decoded = []
        for col, value in zip(sort.columns, values, strict=True):
            if col.key.endswith("_at"):
                value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    return None
            elif not isinstance(value, int) or isinstance(value, bool):
                return None
            decoded.append(value)
        return direction, ([group] if sort.group is not None else []) + decoded
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


# --- full-text search ----------------------------------------------------------------------------

_PHRASE_OR_WORD = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"[^\W_]")  # a letter or a digit: what both databases index
_TSQUERY_SPECIAL = re.compile(r"[&|!():*<>'\\\"]")
# Also in migration 0005's index on PostgreSQL: the query must repeat the indexed expression.
_SIMPLE = literal_column("'simple'")
_BODY_PREFIX = literal_column("100000")


def search_terms(q: str) -> list[tuple[list[str], bool]]:
    """What to look for: (words, prefix) per term. A "quoted phrase" is one term; the last
    plain word of 3 or more characters also finds longer words (the list searches as one types)."""
    terms: list[tuple[list[str], bool]] = []
    for phrase, word in _PHRASE_OR_WORD.findall(q or ""):
        words = [w for w in (phrase.split() if phrase else [word]) if _WORD.search(w)]
        if words:
            terms.append((words, False))
    if terms:
        words, _prefix = terms[-1]
        plain_last = not (q.rstrip().endswith('"'))
        if plain_last and len(words) == 1 and len(words[0]) >= 3:
            terms[-1] = (words, True)
    return terms


def _postgres_query(terms) -> str:
    parts = []
    for words, prefix in terms:
        cleaned = [_TSQUERY_SPECIAL.sub(" ", w).strip() for w in words]
        lexemes = [f"'{w}'" for w in cleaned if _WORD.search(w)]
        if not lexemes:
            continue
        if prefix:
            lexemes[-1] += ":*"
        parts.append("(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)


def _sqlite_query(terms) -> str:
    parts = []
    for words, prefix in terms:
        phrase = " ".join(words).replace('"', '""')
        parts.append(f'"{phrase}"' + ("*" if prefix else ""))
    return " ".join(parts)


# Up to about this many matching messages the search collects every match first (the index
# finds them quickly); a more common word is checked ticket by ticket along the list's own
# order instead, which stops as soon as the page is full.
COLLECT_LIMIT = {"postgresql": 5000, "sqlite": 10000}  # PostgreSQL visits the table for each match


def _search(msp_id: int, terms) -> tuple[object, bool]:
    """The condition "the subject or a message of the ticket has these words", for this
    database, and whether the matches are few enough to count."""
    if db.session.get_bind().dialect.name == "postgresql":
        return _postgres_search(msp_id, terms)
    return _sqlite_search(msp_id, terms)


def _postgres_search(msp_id: int, terms):
    query = _postgres_query(terms)
    if not query:
        return false(), True
    tsquery = func.to_tsquery(_SIMPLE, query)
    in_subject = func.to_tsvector(_SIMPLE, Ticket.subject).op("@@")(tsquery)
    in_body = func.to_tsvector(_SIMPLE, func.left(Message.body_text, _BODY_PREFIX)).op("@@")(tsquery)
    # The planner's estimate from the statistics of the expression index: no extra scan.
    plan = db.session.execute(text(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM messages WHERE msp_id = :msp_id"
        " AND to_tsvector('simple', left(body_text, 100000)) @@ to_tsquery('simple', :query)"),
        {"msp_id": msp_id, "query": query}).scalar()
    if plan[0]["Plan"]["Plan Rows"] <= COLLECT_LIMIT["postgresql"]:
        return Ticket.id.in_(union_all(select(Ticket.id).where(Ticket.msp_id == msp_id, in_subject),
                                       select(Message.ticket_id).where(Message.msp_id == msp_id, in_body))), True
    # Every word as plain text first: far cheaper than to_tsvector, and true wherever the words
    # are (the text holds each lexeme, lower-cased). A scalar subquery, so that PostgreSQL
    # checks ticket by ticket instead of hashing every match as it would for EXISTS.
    words = [piece for ws, _prefix in terms for w in ws for piece in _TSQUERY_SPECIAL.sub(" ", w).split()]
    contains = [Message.body_text.ilike("%" + _like_escape(w) + "%", escape="\\") for w in words]
    first = (select(literal_column("1")).where(Message.ticket_id == Ticket.id, *contains, in_body)
             .limit(1).scalar_subquery())
    return or_(in_subject, first.is_not(None)), False


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sqlite_search(msp_id: int, terms):
    query = _sqlite_query(terms)
    found = db.session.scalar(text("SELECT count(*) FROM (SELECT rowid FROM fts_messages WHERE fts_messages MATCH :q"
                                   " LIMIT :n)"), {"q": query, "n": COLLECT_LIMIT["sqlite"] + 1})
    if found <= COLLECT_LIMIT["sqlite"]:
        subjects = text("SELECT rowid FROM fts_tickets WHERE fts_tickets MATCH :fts_q").bindparams(fts_q=query)
        bodies = text("SELECT rowid FROM fts_messages WHERE fts_messages MATCH :fts_q").bindparams(fts_q=query)
        return or_(Ticket.id.in_(subjects.columns(column("rowid", Integer))),
                   Ticket.id.in_(select(Message.ticket_id).where(
                       Message.msp_id == msp_id, Message.id.in_(bodies.columns(column("rowid", Integer)))))), True
    # FTS5 answers "does message n match" slowly (each lookup starts the query again): the
    # walk checks the texts with the same rules as its tokenizer (_words_match) instead.
    connection = db.session.connection().connection.driver_connection
    connection.create_function("tidemark_words", 2, _words_match, deterministic=True)
    pattern = _words_pattern(terms)
    return or_(func.tidemark_words(Ticket.subject, pattern) == 1,
               select(literal_column("1")).where(Message.ticket_id == Ticket.id,
                                                 func.tidemark_words(Message.body_text, pattern) == 1).exists()), False


def _fold(value: str) -> str:
    """Lower case without accents, as FTS5's unicode61 tokenizer (remove_diacritics 2) sees it."""
    value = value.lower()
    if value.isascii():
        return value
    return "".join(ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch))


_TOKEN = re.compile(r"[^\W_]+")


def _words_pattern(terms) -> str:
    """One regular expression per term, joined by newlines: tokens in a row, as FTS5 matches."""
    patterns = []
    for words, prefix in terms:
        tokens = [t for w in words for t in _TOKEN.findall(_fold(w))]
        if tokens:
            patterns.append(r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, tokens))
                            + ("" if prefix else r"(?![^\W_])"))
    return "\n".join(patterns)


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> list[re.Pattern]:
    return [re.compile(p) for p in pattern.split("\n") if p]


def _words_match(value: str | None, pattern: str) -> int:
    if not value:
        return 0
    folded = _fold(value)
    return int(all(p.search(folded) for p in _compiled(pattern)))


_REFERENCE = re.compile(r"^[A-Za-z][A-Za-z0-9]*-\d+$")


def _filtered(msp_id: int, filters: TicketFilters, search=None):
    query = select(Ticket).where(Ticket.msp_id == msp_id)
    if filters.status:
        query = query.where(Ticket.status == filters.status)
    else:  # by default the work still to do
        query = query.where(Ticket.status.in_(TODO_STATUSES))
    if filters.client_id:
        query = query.where(Ticket.client_id == filters.client_id)
    if filters.priority:
        query = query.where(Ticket.priority == filters.priority)
    if filters.mailbox_id:
        query = query.where(Ticket.mailbox_id == filters.mailbox_id)
    if filters.assignee_id == UNASSIGNED:
        query = query.where(Ticket.assignee_id.is_(None))
    elif filters.assignee_id:
        query = query.where(Ticket.assignee_id == filters.assignee_id)
    if filters.new_information:
        query = query.where(Ticket.new_information.is_(True))
    if search is not None:
        query = query.where(search)
    return query


def _seek(query, columns, descending: bool, after: list | None, limit: int) -> list[Ticket]:
    """One index walk: rows in this order, past the key when given."""
    if after is not None:
        query = query.where(tuple_(*columns) < tuple(after) if descending else tuple_(*columns) > tuple(after))
    order = [c.desc() if descending else c.asc() for c in columns]
    return list(db.session.scalars(query.order_by(*order).limit(limit)))


def _walk(query, sort: TicketSort, filters: TicketFilters, descending: bool, forward: bool,
          key: list | None, limit: int) -> list[Ticket]:
    """Up to limit rows from the key on (forward) or back from it, in reading order of that walk."""
    if sort.group is None:
        return _seek(query, sort.columns, descending == forward, key, limit)
    groups = sort.group_values(filters, descending if forward else not descending)
    start = 0
    if key is not None:
        if key[0] not in groups:
            return []
        start = groups.index(key[0])
    rows: list[Ticket] = []
    for i, value in enumerate(groups[start:]):
        after = key[1:] if key is not None and i == 0 else None
        rows += _seek(query.where(sort.group == value), sort.columns, forward, after, limit - len(rows))
        if len(rows) >= limit:
            break
    return rows


def list_tickets(msp_id: int, filters: TicketFilters, *, sort: str = "updated", order: str = "",
                 cursor: str = "", per_page: int = 50) -> TicketPage:
    """One page of the list. Keyset paging: a cursor names the row a page starts after (or ends
    before), so any page costs the same as the first and no ticket is shown twice or skipped
    while others change. A reference (T-1042) as the search shows that ticket alone."""
    chosen = SORTS.get(sort) or SORTS["updated"]
    descending = {"asc": False, "desc": True}.get(order, chosen.descending)
    q = filters.q.strip()
    if _REFERENCE.match(q):
        exact = get_ticket(msp_id, q)
        if exact is not None:
            return TicketPage([exact], 1, chosen, descending, jumped=True)
    terms = search_terms(q)
    search, countable = _search(msp_id, terms) if terms else (None, True)
    query = _filtered(msp_id, filters, search).options(selectinload(Ticket.client), selectinload(Ticket.contact))
    position = _decode_cursor(cursor, chosen, descending) if cursor else None
    direction, key = position if position else ("after", None)
    forward = direction == "after"
    rows = _walk(query, chosen, filters, descending, forward, key, per_page + 1)
    more = len(rows) > per_page
    rows = rows[:per_page]
    if not forward:
        rows.reverse()
    if (not forward and not more) or (key is not None and not rows):
        # Back at the top, or past the end of a list that changed: the first page, whole.
        key, forward = None, True
        rows = _walk(query, chosen, filters, descending, True, None, per_page + 1)
        more = len(rows) > per_page
        rows = rows[:per_page]
    page = TicketPage(rows, _count(msp_id, filters, search) if countable else None, chosen, descending)
    if rows:
        if forward:
            page.newer = _encode_cursor(chosen, descending, "before", rows[0]) if key is not None else None
            page.older = _encode_cursor(chosen, descending, "after", rows[-1]) if more else None
        else:
            page.newer = _encode_cursor(chosen, descending, "before", rows[0])
            page.older = _encode_cursor(chosen, descending, "after", rows[-1])
    return page


def _count(msp_id: int, filters: TicketFilters, search) -> int:
    """How many tickets match, counted no further than COUNT_LIMIT + 1."""
    capped = _filtered(msp_id, filters, search).with_only_columns(Ticket.id).limit(COUNT_LIMIT + 1)
    return db.session.scalar(select(func.count()).select_from(capped.subquery()))


def conversation(ticket: Ticket) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.ticket_id == ticket.id)
                                   .options(selectinload(Message.attachments)).order_by(Message.id)))


def linked_tickets(ticket: Ticket) -> list[tuple[str, Ticket]]:
    links = db.session.scalars(select(TicketLink).where(
        or_(TicketLink.ticket_id == ticket.id, TicketLink.linked_id == ticket.id)))
    return [(link.kind, link.linked if link.ticket_id == ticket.id else link.ticket) for link in links]


def reply_defaults(ticket: Ticket) -> tuple[list[str], list[str]]:
    """To and Cc for a reply: from the last email of the conversation, without our own addresses."""
    ours: set[str] = set()
    if ticket.mailbox_id:
        ours = {a.lower() for a in db.session.get(Mailbox, ticket.mailbox_id).addresses}
    last = db.session.scalar(select(Message).where(Message.ticket_id == ticket.id, Message.direction == "in")
                             .order_by(Message.id.desc()).limit(1))
    if last is None:
        return ([ticket.contact.email] if ticket.contact else []), list(ticket.cc)
    to = [last.from_address] if last.from_address else []
    cc = [p["address"] for p in (*last.to, *last.cc) if p["address"].lower() not in ours and p["address"] not in to]
    return to, cc


def _addresses(text: str, field_name: str, errors: dict) -> list[str]:
    """Addresses typed into a field, separated by commas, semicolons or new lines."""
    parts = [p.strip() for p in re.split(r"[,;\n]+", text or "") if p.strip()]
    try:
        return [a.addr_spec for a in parse_addresses(parts)]
    except AddressError as exc:
        errors.setdefault(field_name, []).append(f"{exc}.")
        return []


# --- what a reply carries: its body as written in the editor, files and inline images -----------

MB = 1024 * 1024
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# Content-IDs the composer gives pasted images; anything else is not ours to reference.
CONTENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATA_IMAGE = re.compile(r'src="data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=\s]+)"', re.IGNORECASE)
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@dataclass(frozen=True)
class ReplyFile:
    """A file sent with a reply. With a content_id it is an image the HTML shows as cid:."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


@dataclass(frozen=True)
class FileLimits:
    each: int = 10 * MB
    total: int = 25 * MB


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB / 10 else f"{max(1, round(n / 1024))} KB"


def clean_filename(name: str) -> str:
    """The last part of an uploaded name, without control characters; never empty."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name[:255] or "attachment"


def _content_type(given: str | None, filename: str) -> str:
    value = (given or "").split(";")[0].strip().lower()
    if not _MIME_TYPE.match(value) or value == "application/octet-stream":
        value = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return value


def _extract_data_images(html: str) -> tuple[str, list[ReplyFile]]:
    """Images pasted as data: URLs become cid: parts (mail clients block data: images)."""
    found: list[ReplyFile] = []

    def to_cid(match: re.Match) -> str:
        try:
            data = base64.b64decode("".join(match.group(2).split()), validate=True)
        except ValueError:
            return 'src=""'
        cid = f"img{len(found) + 1}.{hashlib.sha256(data).hexdigest()[:16]}"
        ctype = match.group(1).lower()
        found.append(ReplyFile(f"image-{len(found) + 1}{mimetypes.guess_extension(ctype) or '.img'}",
                               ctype, data, cid))
        return f'src="cid:{cid}"'

    return _DATA_IMAGE.sub(to_cid, html), found


@dataclass
class ReplyBody:
    text: str
    html: str | None
    files: list[ReplyFile]


def reply_body(text: str, html: str, files: Sequence[ReplyFile], limits: FileLimits,
               errors: dict[str, list[str]]) -> ReplyBody:
    """The body as the editor wrote it (sanitised; the text part derived from it) or as plain
    text, and the files it carries, checked against the limits. Problems go into errors."""
    html = (html or "").strip()
    body_html = None
    if html:
        body_html, pasted = _extract_data_images(sanitize_html(html))
        body_text = html_to_text(body_html).strip()
        files = [*files, *pasted]
        if not body_text and "<img" not in body_html:
            errors.setdefault("text", []).append("Write the reply.")
    else:
        body_text = (text or "").strip()
        if not body_text:
            errors.setdefault("text", []).append("Write the reply.")
    kept: list[ReplyFile] = []
    for f in files:
        if f.content_id is not None:
            if body_html is None or f"cid:{f.content_id}" not in body_html:
                continue  # an image removed from the text again
            if f.content_type not in INLINE_IMAGE_TYPES:
                errors.setdefault("attachments", []).append(
                    f"{f.filename} cannot be shown in the text: images are PNG, JPEG, GIF or WebP.")
                continue
        if len(f.data) > limits.each:
            errors.setdefault("attachments", []).append(
                f"{f.filename} is more than {_size(limits.each)}; each file may be at most {_size(limits.each)}.")
        kept.append(f)
    total = sum(len(f.data) for f in kept)
    if total > limits.total:
        errors.setdefault("attachments", []).append(
            f"The files add up to {_size(total)}; a reply may carry at most {_size(limits.total)} in all.")
    return ReplyBody(body_text, body_html, kept)


def reply(ticket: Ticket, author: User, *, to: str, cc: str, text: str, set_status: str = "", html: str = "",
          files: Sequence[ReplyFile] = (), limits: FileLimits | None = None) -> Message:
    """A technician's public reply: into the outbox (the reply template wraps the text).
    html: what the editor wrote (sanitised here; the plain-text part is derived from it);
    files: attachments, and the images the HTML shows as cid: (those with a content_id)."""
    errors: dict[str, list[str]] = {}
    to_list = _addresses(to, "to", errors)
    cc_list = _addresses(cc, "cc", errors)
    if not to_list and "to" not in errors:
        errors["to"] = ["Send the reply to at least one address."]
    body = reply_body(text, html, files, limits or FileLimits(), errors)
    if set_status and set_status not in WORK_STATUSES:
        errors["set_status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if errors:
        raise ValidationError(errors)
    in_reply_to, thread = conversation_thread(ticket)
    message = queue_mail("reply", msp_id=ticket.msp_id, ticket=ticket, to=to_list, cc=cc_list, author_id=author.id,
                         in_reply_to=in_reply_to, references=thread, body_text=body.text, body_html=body.html)
    message.from_name, message.from_address = author.name or author.email, author.email
    for f in body.files:
        name = clean_filename(f.filename)
        message.attachments.append(Attachment(
            filename=name, content_type=_content_type(f.content_type, name), size=len(f.data),
            sha256=hashlib.sha256(f.data).hexdigest(), content_id=f.content_id, inline=f.content_id is not None,
            data=f.data))
    ticket.new_information = False
    ticket.updated_at = utcnow()
    if set_status:
        change_status(ticket, set_status, author)
    db.session.flush()
    return message


HISTORY_LIMIT = 50


def quoted_history(ticket: Ticket, tz: tzinfo) -> str:
    """The conversation so far as HTML to quote in a reply, newest first: "On <date>, <name>
    wrote:" and the body as it stands on the ticket (cut at the waterline). Internal notes,
    automatic mail and replies that never went out stay out: the customer never saw them."""
    rows = db.session.scalars(select(Message).where(Message.ticket_id == ticket.id,
                                                    Message.direction.in_(("in", "out")))
                              .order_by(Message.id.desc()).limit(HISTORY_LIMIT * 2))
    parts: list[str] = []
    for m in rows:
        if m.direction == "out" and (m.details.get("automatic") or m.delivery != "sent"):
            continue
        body = (m.body_text or "").strip()
        if not body:
            continue
        at = (m.sent_at or m.created_at).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
        who = m.from_name or m.from_address or "someone"
        lines = "<br>".join(html_lib.escape(line) for line in body.split("\n"))
        parts.append(f"<p>On {html_lib.escape(at)}, {html_lib.escape(who)} wrote:</p>"
                     f'<blockquote type="cite">{lines}</blockquote>')
        if len(parts) == HISTORY_LIMIT:
            break
    return "".join(parts)


def add_note(ticket: Ticket, author: User, text: str) -> Message:
    """An internal note: on the ticket, never emailed."""
    if not (text or "").strip():
        raise ValidationError({"note": ["Write the note."]})
    note = Message(msp_id=ticket.msp_id, ticket=ticket, direction="note", author_id=author.id,
                   from_name=author.name or author.email, from_address=author.email, body_text=text.strip())
    db.session.add(note)
    ticket.updated_at = utcnow()
    db.session.flush()
    return note


def mark_read(ticket: Ticket) -> None:
    if ticket.new_information:
        ticket.new_information = False
        db.session.flush()


def filter_choices(msp_id: int) -> dict:
    return {
        "clients": db.session.scalars(select(Client).where(Client.msp_id == msp_id).order_by(Client.name)).all(),
        "mailboxes": db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)).all(),
        "users": assignable_users(msp_id),
        "statuses": WORK_STATUSES,
        "priorities": PRIORITIES,
    }


__all__ = ["TICKET_STATUSES", "FileLimits", "ReplyFile", "TicketFilters", "add_note", "change_status",
           "conversation", "get_ticket", "list_tickets", "quoted_history", "reply", "reply_defaults"]


# --- the fields a technician sets: priority, assignee, type; on one ticket or many at once -------

TYPE_MAX = 60


def assignable_users(msp_id: int) -> list[User]:
    """Who may be given tickets: the MSP's admins and technicians who can sign in."""
    return list(db.session.scalars(select(User).where(User.msp_id == msp_id, User.disabled.is_(False))
                                   .order_by(func.lower(User.name), User.email)))


def get_assignable(msp_id: int, user_id: int | None) -> User | None:
    if user_id is None:
        return None
    return db.session.scalar(select(User).where(User.id == user_id, User.msp_id == msp_id,
                                                User.disabled.is_(False)))


def assignee_of(ticket: Ticket) -> User | None:
    return db.session.get(User, ticket.assignee_id) if ticket.assignee_id else None


def _person(user: User | None) -> str | None:
    # The history keeps the name as it was, so it still reads right after the user is renamed.
    return (user.name or user.email) if user else None


@dataclass(frozen=True)
class _Field:
    """How one of the ticket's own fields changes: the value as stored (or a ValidationError),
    how the history shows a value, and the email the contact gets for the change (if any)."""

    column: str
    action: str  # the history entry's action
    clean: Callable[[Ticket, Any], Any]
    shown: Callable[[Any], Any] = lambda value: value
    event: Callable[[Any, Any], str | None] = lambda old, new: None


def _valid_status(ticket: Ticket, status: str) -> str:
    if status not in WORK_STATUSES:
        raise ValidationError({"status": [f"The status is one of {', '.join(WORK_STATUSES)}."]})
    return status


def _status_event(old: str, new: str) -> str | None:
    if new == "closed":
        return "closed"
    return "reopened" if old in ("resolved", "closed") and new in ("new", "open", "waiting") else None


def _valid_priority(ticket: Ticket, priority: str) -> str:
    if priority not in PRIORITIES:
        raise ValidationError({"priority": [f"The priority is one of {', '.join(PRIORITIES)}."]})
    return priority


def _valid_assignee(ticket: Ticket, assignee: User | None) -> int | None:
    """A user of the ticket's MSP, or nobody (None); the one it already has may since be disabled."""
    if assignee is not None and assignee.id != ticket.assignee_id and (
            assignee.msp_id != ticket.msp_id or assignee.disabled):
        raise ValidationError({"assignee": ["Choose an active user of your MSP, or nobody."]})
    return assignee.id if assignee else None


def _valid_type(ticket: Ticket, type_: str | None) -> str | None:
    value = " ".join((type_ or "").split()) or None
    if value and len(value) > TYPE_MAX:
        raise ValidationError({"type": [f"The type is at most {TYPE_MAX} characters."]})
    return value


_FIELDS = {
    "status": _Field("status", "status", _valid_status, event=_status_event),
    "priority": _Field("priority", "priority", _valid_priority, event=lambda old, new: "priority_changed"),
    "assignee": _Field("assignee_id", "assigned", _valid_assignee,
                       shown=lambda user_id: _person(db.session.get(User, user_id) if user_id else None),
                       event=lambda old, new: "owner_changed"),
    "type": _Field("type", "type", _valid_type),
}


def change(name: str, ticket: Ticket, value, actor: User | None) -> bool:
    """Set one of the ticket's fields (status, priority, assignee, type); False if it already
    had that value. Each change is in the ticket's history and may tell the contact."""
    rule = _FIELDS[name]
    new = rule.clean(ticket, value)
    old = getattr(ticket, rule.column)
    if new == old:
        return False
    audit.record(actor, ticket.msp_id, "ticket", ticket.id, rule.action,
                 {name: [rule.shown(old), rule.shown(new)]})
    setattr(ticket, rule.column, new)
    ticket.updated_at = utcnow()
    if event := rule.event(old, new):
        notify_contact(event, ticket)
    db.session.flush()
    return True


change_status = partial(change, "status")
change_priority = partial(change, "priority")
change_assignee = partial(change, "assignee")  # a User, or None for nobody
change_type = partial(change, "type")


def types_in_use(msp_id: int) -> list[str]:
    """Ticket types the MSP already uses, offered as suggestions."""
    return list(db.session.scalars(select(Ticket.type).where(Ticket.msp_id == msp_id, Ticket.type.is_not(None))
                                   .distinct().order_by(Ticket.type).limit(100)))


def _record_id(text: str) -> int | None:
    """A posted id as a number the database can hold, else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


@dataclass
class FieldsInput:
    """The ticket page's fields as posted; assignee: a user id, or "" for nobody."""

    priority: str
    assignee: str = ""
    type: str = ""


def update_fields(ticket: Ticket, data: FieldsInput, actor: User | None) -> list[str]:
    """Apply what changed, each field with its own history entry; returns the changed fields.
    Nothing is applied unless every field is valid."""
    errors: dict[str, list[str]] = {}
    if data.priority not in PRIORITIES:
        errors["priority"] = [f"The priority is one of {', '.join(PRIORITIES)}."]
    assignee_id = _record_id(data.assignee) if data.assignee else None
    assignee = get_assignable(ticket.msp_id, assignee_id)
    if data.assignee and assignee is None and (assignee_id is None or assignee_id != ticket.assignee_id):
        errors["assignee"] = ["Choose an active user of your MSP, or nobody."]
    if len(" ".join((data.type or "").split())) > TYPE_MAX:
        errors["type"] = [f"The type is at most {TYPE_MAX} characters."]
    if errors:
        raise ValidationError(errors)
    changed = []
    if change_priority(ticket, data.priority, actor):
        changed.append("priority")
    # A ticket kept with a user who was disabled since stays theirs until someone else takes it.
    if assignee_id != ticket.assignee_id and change_assignee(ticket, assignee, actor):
        changed.append("assignee")
    if change_type(ticket, data.type, actor):
        changed.append("type")
    return changed


def ticket_changes(ticket: Ticket, *, page: int = 1, per_page: int = 20):
    """The ticket's history of changes (status, priority, assignee, type), newest first: (entries, total)."""
    return audit.history(ticket.msp_id, "ticket", ticket.id, page=page, per_page=per_page)


UNASSIGN = "none"


@dataclass
class BulkChange:
    """What to do with the selected tickets; "" leaves a field as it is.
    assignee: a user id, or UNASSIGN."""

    status: str = ""
    priority: str = ""
    assignee: str = ""


@dataclass
class BulkResult:
    updated: list[Ticket] = field(default_factory=list)
    unchanged: list[Ticket] = field(default_factory=list)
    # Selected ids that are no ticket of this MSP: left alone, and said so.
    ignored: list[str] = field(default_factory=list)


BULK_MAX = 500


def bulk_update(msp_id: int, ids: Sequence[str], change: BulkChange, actor: User | None) -> BulkResult:
    """The same change on many tickets, each through the single-ticket path (so each is audited).
    Only tickets of this MSP are touched; anything else selected is reported, not an error."""
    errors: dict[str, list[str]] = {}
    wanted: list[int] = []
    result = BulkResult()
    for raw in dict.fromkeys(str(i).strip() for i in ids if str(i).strip()):
        if (number := _record_id(raw)) is not None:
            wanted.append(number)
        else:
            result.ignored.append(raw[:40])
    if not wanted and not result.ignored:
        errors["ticket"] = ["Select at least one ticket."]
    elif len(wanted) > BULK_MAX:
        errors["ticket"] = [f"Select at most {BULK_MAX} tickets at once."]
    if not (change.status or change.priority or change.assignee):
        errors["change"] = ["Choose a status, an assignee or a priority to set."]
    if change.status and change.status not in WORK_STATUSES:
        errors["status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if change.priority and change.priority not in PRIORITIES:
        errors["priority"] = [f"The priority is one of {', '.join(PRIORITIES)}."]
    assignee = None
    if change.assignee and change.assignee != UNASSIGN:
        assignee = get_assignable(msp_id, _record_id(change.assignee))
        if assignee is None:
            errors["assignee"] = ["Choose an active user of your MSP, or nobody."]
    if errors:
        raise ValidationError(errors)
    tickets = db.session.scalars(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.id.in_(wanted))
                                 .order_by(Ticket.id)).all() if wanted else []
    found = {t.id for t in tickets}
    result.ignored += [str(i) for i in wanted if i not in found]
    for ticket in tickets:
        changed = False
        if change.status:
            changed |= change_status(ticket, change.status, actor)
        if change.priority:
            changed |= change_priority(ticket, change.priority, actor)
        if change.assignee:
            changed |= change_assignee(ticket, assignee, actor)
        (result.updated if changed else result.unchanged).append(ticket)
    return result
