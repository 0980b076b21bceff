"""The ticket list as technicians search it: filters, sorts, keyset pages and full-text search
(the indexes of migration 0005). It only reads."""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache

from sqlalchemy import Integer, column, false, func, literal_column, or_, select, text, tuple_, union_all
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.mail.extract import field_value
from portal.models import Client, Mailbox, Message, Ticket, TicketFieldValue
from portal.models.tickets import PRIORITIES
from portal.models.base import utcnow
from portal.services import containing, sla
from portal.services.custom_fields import field_or_none, list_fields
from portal.services.tickets import WORK_STATUSES, assignable_users, get_ticket


@dataclass
class TicketFilters:
    q: str = ""
    status: str = ""
    client_id: int | None = None
    priority: str = ""
    mailbox_id: int | None = None
    assignee_id: int | None = None  # UNASSIGNED: tickets nobody has taken
    new_information: bool = False
    # A custom field's value (both set, or no filter); the value as typed, matched as stored.
    field_id: int | None = None
    field_value: str = ""
    sla: str = ""  # one of SLA_FILTERS: "breached", "due_today"
    tz: tzinfo = UTC  # the viewer's zone: where "today" ends
    errors: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.q or self.status or self.client_id or self.priority or self.mailbox_id
                    or self.assignee_id is not None or self.new_information
                    or (self.field_id and self.field_value) or self.sla)


SLA_FILTERS = {"breached": "SLA: breached", "due_today": "SLA: due today"}


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
    # The nearest due time of a clock still running; tickets without one last (the far date).
    TicketSort("due", "Due first", False, (sla.due_first_key().label("sla_due_at"), Ticket.id)),
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
        value = sla.due_first_value(row) if col.key == "sla_due_at" else getattr(row, col.key)
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
# PostgreSQL's estimate for a word its statistics do not list among the frequent ones grows with
# the table (5,000,000 messages: 18,000 for a word in 12 of them), and checking along the list for
# such a word reads every ticket. A word estimated no higher than a word that is nowhere is collected.
COLLECT_UNLISTED = True
_NOWHERE = "'zq0nowhere0qz'"


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
    rows = _estimated_matches(msp_id, query)
    if rows <= COLLECT_LIMIT["postgresql"] or (COLLECT_UNLISTED and rows <= _estimated_matches(msp_id, _NOWHERE)):
        matches = union_all(select(Ticket.id).where(Ticket.msp_id == msp_id, in_subject),
                            select(Message.ticket_id).where(Message.msp_id == msp_id, in_body)).subquery()
        # The tickets themselves when they are few: given the subquery, the planner (which
        # estimates an unlisted word by the table's size) hashes every ticket the filters allow
        # against it, 150 ms at 1,000,000 tickets for 12 matches.
        ids = list(db.session.scalars(select(matches.c[0]).where(matches.c[0].is_not(None)).distinct()
                                      .limit(COLLECT_LIMIT["postgresql"] + 1)))
        if len(ids) <= COLLECT_LIMIT["postgresql"]:
            return Ticket.id.in_(ids), True
        return Ticket.id.in_(select(matches.c[0])), True
    # Every word as plain text first: far cheaper than to_tsvector, and true wherever the words
    # are (the text holds each lexeme, lower-cased). A scalar subquery, so that PostgreSQL
    # checks ticket by ticket instead of hashing every match as it would for EXISTS.
    words = [piece for ws, _prefix in terms for w in ws for piece in _TSQUERY_SPECIAL.sub(" ", w).split()]
    contains = [Message.body_text.ilike(containing(w), escape="\\") for w in words]
    first = (select(literal_column("1")).where(Message.ticket_id == Ticket.id, *contains, in_body)
             .limit(1).scalar_subquery())
    return or_(in_subject, first.is_not(None)), False


def _estimated_matches(msp_id: int, query: str) -> float:
    """The planner's estimate of the messages matching, from the statistics of the expression
    index: no scan."""
    plan = db.session.execute(text(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM messages WHERE msp_id = :msp_id"
        " AND to_tsvector('simple', left(body_text, 100000)) @@ to_tsquery('simple', :query)"),
        {"msp_id": msp_id, "query": query}).scalar()
    return plan[0]["Plan"]["Plan Rows"]


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
    if filters.field_id and filters.field_value.strip():
        query = query.where(Ticket.id.in_(_with_field_value(msp_id, filters.field_id, filters.field_value)))
    if filters.sla == "breached":
        query = query.where(sla.breached_filter(utcnow()))
    elif filters.sla == "due_today":
        today = utcnow().astimezone(filters.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        # Due before the end of the viewer's day and still running: overdue ones are due today too.
        query = query.where(sla.due_before_filter((today + timedelta(days=1)).astimezone(UTC)))
    if search is not None:
        query = query.where(search)
    return query


def _with_field_value(msp_id: int, field_id: int, text: str):
    """The tickets whose custom field has this value (written as the ticket page stores it)."""
    custom = field_or_none(msp_id, field_id)
    value = " ".join(text.split())
    if custom is not None:
        try:
            value = field_value(custom.kind, custom.choices, value)
        except ValueError:
            pass  # matches nothing, as no ticket holds such a value
    return select(TicketFieldValue.ticket_id).where(TicketFieldValue.msp_id == msp_id,
                                                    TicketFieldValue.field_id == field_id,
                                                    TicketFieldValue.value == value)


def filtered_query(msp_id: int, filters: TicketFilters):
    """The tickets the list's filters and search select, unordered (the CSV export)."""
    terms = search_terms(filters.q.strip())
    return _filtered(msp_id, filters, _search(msp_id, terms)[0] if terms else None)


def _seek(query, columns, descending: bool, after: list | None, limit: int) -> list[Ticket]:
    """One index walk: rows in this order, past the key when given."""
    if after is not None:
        query = query.where(tuple_(*columns) < tuple(after) if descending else tuple_(*columns) > tuple(after))
    order = [c.desc() if descending else c.asc() for c in columns]
    return list(db.session.scalars(query.order_by(*order).limit(limit)))


def _walk(query, sort: TicketSort, filters: TicketFilters, descending: bool, forward: bool,
          key: list | None, limit: int) -> list[Ticket]:
    """Up to limit rows from the key on (forward) or back from it, in reading order of that walk."""
    if sort.key == "due":
        return _walk_due(query, sort, descending == forward, key, limit)
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


def _walk_due(query, sort: TicketSort, descending: bool, key: list | None, limit: int) -> list[Ticket]:
    """"Due first" as two walks: the tickets with a running clock by their nearest due time,
    then those without (all at the far date) by id alone. The second walk follows an index
    instead of ranking every ticket of the list by an expression no index holds (at 1,000,000
    tickets that ranking took 110-300 ms a page); the first still sorts what it finds, which is
    the tickets with a clock running."""
    running = sla.running_clock_filter()
    groups = [(running, sort.columns), (~running, (Ticket.id,))]
    if descending:
        groups.reverse()
    start = 0
    if key is not None:
        start = next(i for i, (cond, _cols) in enumerate(groups) if (cond is running) != (key[0] == sla.NEVER_DUE))
    rows: list[Ticket] = []
    for i, (cond, columns) in enumerate(groups[start:]):
        after = None
        if key is not None and i == 0:
            after = key if len(columns) == 2 else key[1:]
        rows += _seek(query.where(cond), columns, descending, after, limit - len(rows))
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


def filter_choices(msp_id: int) -> dict:
    return {
        "clients": db.session.scalars(select(Client).where(Client.msp_id == msp_id).order_by(Client.name)).all(),
        "mailboxes": db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)).all(),
        "users": assignable_users(msp_id),
        "statuses": WORK_STATUSES,
        "priorities": PRIORITIES,
        "fields": list_fields(msp_id),
    }
