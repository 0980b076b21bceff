"""The IMAP IDLE watcher: new mail in an IMAP mailbox is fetched at once, not at the next poll.

    python -m workers.watcher

Any number may run, on any machines: each takes its share of the active IMAP mailboxes (a lease
per mailbox in Redis, portal.inbound.push) and keeps one IDLE connection (RFC 2177) for each.
When the server tells of new mail (EXISTS or RECENT), it asks for the mailbox's fetch job, the
same job with the same id the scheduler queues, so there is one fetch per mailbox at a time; a
fetch already under way is asked for again when it ends (it may have looked before the mail came).

How, and why so: one thread per connection, each with a small stack (IDLE_STACK), on the same
login code as the fetch (portal.transport.imap.ImapSession: password, SASL PLAIN for shared
mailboxes, XOAUTH2/OAUTHBEARER with the grant's fresh token, STARTTLS/TLS, only the addresses
the server-reach rule checked). A thread waits in poll() on its socket and wakes every
CHECK_SECONDS to see whether it was asked to stop. Measured (tests/bench/bench_push.py): 130 MB
resident with 200 idle connections, of which about 100 MB is the portal's code that any worker
loads; the 150 MB target holds. TLS connections share one TLS context per kind of certificate
check (transport.base.tls_context), or each would hold its own 0.8 MB copy of the CA store. An
asyncio IMAP client of our own would save a little more but would need a second copy of the login
code, which the fetch and the connection test share.

The main thread does the rest, every TICK_SECONDS: it renews its leases, the mailboxes' states and
its own beat; every `refresh` seconds it reads the active mailboxes again (a change of server,
login or folder reconnects; disabled, deleted, inside a skip window or cooling off after failed
polls: the connection is closed and the lease let go) and takes or gives back leases so that
each live watcher holds about its share. The database is only read here, and the server settings
(which may refresh an OAuth2 grant) are made here, before a thread connects.

A connection re-issues IDLE every REIDLE_SECONDS (servers may end an IDLE after 30 minutes). One
that fails is tried again after 1, 2, 4 ... up to BACKOFF_MAX seconds, with jitter; meanwhile the
page says "polling: reconnecting after <the error in plain words>" and the scheduler polls the
mailbox at its own interval. A server that does not offer IDLE is asked again after an hour (or
when the mailbox's settings change). Only the first of a mailbox's folders is watched (an IMAP
connection waits on one folder); the others are fetched with it, and by the safety poll.
SIGTERM or SIGINT: every connection ends IDLE (DONE) and logs out, and the leases are let go.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from portal.extensions import db
from portal.inbound.push import (LEASE_PREFIX, LEASE_SECONDS, NO_IDLE, STATE_PREFIX, WATCHERS, ask_for_fetch,
                                 connection_key, watched_mailboxes, write_state)
from portal.jobs import redis_connection
from portal.models import Mailbox
from portal.models.base import utcnow
from portal.services import commit
from portal.services.mailboxes import server_settings
from portal.transport import ImapSession, TransportError
from portal.transport.base import ServerSettings
from workers.runtime import get_app

log = logging.getLogger("tidemark.watcher")

TICK_SECONDS = 0.5
REFRESH_SECONDS = 10.0
CHECK_SECONDS = 2.0
REIDLE_SECONDS = 25 * 60
BACKOFF_MAX = 300.0
# A connection that stayed up this long starts its next backoff from the shortest pause again.
BACKOFF_RESET = 60.0
NO_IDLE_RETRY = 3600.0
IDLE_STACK = 256 * 1024

_RENEW = """
local kept = {}
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
    table.insert(kept, key)
  end
end
return kept
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]); redis.call('del', KEYS[2]) end
return 0
"""


class Watch(threading.Thread):
    """One mailbox's IDLE connection, until it fails or is asked to stop."""

    def __init__(self, watcher: "Watcher", mailbox_id: int, settings: ServerSettings, folder: str):
        super().__init__(name=f"idle {mailbox_id}", daemon=True)
        self.watcher, self.mailbox_id, self.settings, self.folder = watcher, mailbox_id, settings, folder
        self.stop = threading.Event()
        self.error: TransportError | None = None
        self.no_idle = False
        self.began = time.monotonic()

    def run(self) -> None:
        try:
            with ImapSession(self.settings) as session:
                if not session.has("IDLE"):
                    self.no_idle = True
                    return
                session.select(self.folder, readonly=True)
                self.watcher.pushing(self.mailbox_id)
                self.watcher.new_mail(self.mailbox_id)  # what came while nobody watched
                while not self.stop.is_set():
                    self._idle(session)
        except TransportError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - one mailbox's trouble must not end the others
            log.exception("watching mailbox %s stopped on an unexpected error", self.mailbox_id)
            self.error = TransportError("protocol", f"an unexpected error ({type(exc).__name__})", transient=True)

    def _idle(self, session: ImapSession) -> None:
        session.idle()
        renew_at = time.monotonic() + REIDLE_SECONDS
        while not self.stop.is_set() and time.monotonic() < renew_at:
            if session.idle_wait(min(CHECK_SECONDS, max(0.0, renew_at - time.monotonic()))):
                self.watcher.new_mail(self.mailbox_id)
        if session.idle_done():
            self.watcher.new_mail(self.mailbox_id)


@dataclass
class Held:
    """A mailbox whose lease this watcher holds."""

    key: tuple
    watch: Watch | None = None
    retry_at: float = 0.0
    failures: int = 0
    state: tuple = field(default=("polling", "connecting"))
    since: float = field(default_factory=time.time)
    written: tuple = ()  # the state and since last written to Redis


class Watcher:
    def __init__(self, app, connection: Redis, *, refresh: float = REFRESH_SECONDS):
        self.app, self.redis, self.refresh = app, connection, refresh
        self.token = uuid.uuid4().hex
        self.held: dict[int, Held] = {}
        self.again: set[int] = set()  # fetches to ask for again when the running one ends
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.wanted: dict[int, tuple] = {}
        self._next_refresh = self._next_renew = 0.0

    # --- called from the connections' threads ------------------------------------------------------

    def pushing(self, mailbox_id: int) -> None:
        with self.lock:
            entry = self.held.get(mailbox_id)
            if entry is not None:
                entry.state, entry.since = ("push", ""), time.time()
        self._write_states([mailbox_id])
        log.info("mailbox %s: push (IDLE)", mailbox_id)

    def new_mail(self, mailbox_id: int) -> None:
        try:
            with self.app.app_context():
                outcome = ask_for_fetch(mailbox_id, self.redis)
        except (RedisError, OSError) as exc:
            log.warning("mailbox %s: could not ask for its fetch: %s", mailbox_id, exc)
            outcome = "running"
        if outcome == "running":
            with self.lock:
                self.again.add(mailbox_id)

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except (RedisError, OSError) as exc:
                log.warning("Redis is unreachable (%s); trying again", exc)
            self.stopping.wait(TICK_SECONDS)
        self.shutdown()

    def tick(self) -> None:
        now = time.monotonic()
        renew = now >= self._next_renew
        if renew:  # leases and states live LEASE_SECONDS: renewed every tenth of that
            self._beat()
            self._renew()
            self._next_renew = now + LEASE_SECONDS / 10
        if now >= self._next_refresh:
            self._read_mailboxes()
            self._balance()
            self._next_refresh = now + self.refresh
        self._reap(now)
        self._connect(now)
        self._ask_again()
        # Every state now and then; a changed one (see _reap, _connect) at once.
        self._write_states([i for i, e in self.held.items() if renew or (e.state, e.since) != e.written])

    def _beat(self) -> None:
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.zadd(WATCHERS, {self.token: now})
            pipe.zremrangebyscore(WATCHERS, "-inf", now - LEASE_SECONDS)
            pipe.execute()

    def _renew(self) -> None:
        if not self.held:
            return
        ids = list(self.held)
        kept = self.redis.eval(_RENEW, len(ids), *[LEASE_PREFIX + str(i) for i in ids], self.token,
                               LEASE_SECONDS * 1000)
        kept = {int(k.decode().rpartition(":")[2]) for k in kept}
        for mailbox_id in ids:
            if mailbox_id not in kept:  # Redis lost it, or it expired while we hung: let it go
                log.warning("mailbox %s: lease lost; letting it go", mailbox_id)
                self._let_go(mailbox_id, release=False)

    def _read_mailboxes(self) -> None:
        with self.app.app_context():
            self.wanted = {m.id: connection_key(m) for m in watched_mailboxes(utcnow())}
            db.session.rollback()
        for mailbox_id, entry in list(self.held.items()):
            key = self.wanted.get(mailbox_id)
            if key is None:
                log.info("mailbox %s: no longer watched", mailbox_id)
                self._let_go(mailbox_id)
            elif key != entry.key:
                log.info("mailbox %s: its settings changed; connecting again", mailbox_id)
                self._stop_watch(entry)
                entry.key, entry.retry_at, entry.failures = key, 0.0, 0
                entry.state, entry.since = ("polling", "connecting"), time.time()

    def _balance(self) -> None:
        """Hold about a fair share: the wanted mailboxes over the live watchers, rounded up."""
        live = max(1, self.redis.zcount(WATCHERS, time.time() - LEASE_SECONDS, "+inf"))
        share = math.ceil(len(self.wanted) / live)
        extra = len(self.held) - share
        for mailbox_id in sorted(self.held, reverse=True)[:max(0, extra)]:
            self._let_go(mailbox_id)
        for mailbox_id, key in self.wanted.items():
            if len(self.held) >= share:
                break
            if mailbox_id in self.held:
                continue
            if self.redis.set(LEASE_PREFIX + str(mailbox_id), self.token, nx=True, px=LEASE_SECONDS * 1000):
                with self.lock:
                    self.held[mailbox_id] = Held(key)

    def _reap(self, now: float) -> None:
        """Connections that ended: back off before the next try."""
        for mailbox_id, entry in list(self.held.items()):
            watch = entry.watch
            if watch is None or watch.is_alive():
                continue
            entry.watch = None
            if watch.no_idle:
                entry.state, entry.since, entry.retry_at = ("polling", NO_IDLE), time.time(), now + NO_IDLE_RETRY
                continue
            if watch.stop.is_set():
                continue
            lived = now - watch.began
            entry.failures = 1 if lived > BACKOFF_RESET else entry.failures + 1
            pause = min(BACKOFF_MAX, 2 ** (entry.failures - 1)) * random.uniform(0.5, 1.5)
            entry.retry_at = now + pause
            error = watch.error.message if watch.error else "the connection ended"
            entry.state, entry.since = ("polling", f"reconnecting after {error}"), time.time()
            log.info("mailbox %s: %s; connecting again in %.0f s", mailbox_id, error, pause)

    def _connect(self, now: float) -> None:
        # Making settings may refresh OAuth2 grants over HTTP: the rest waits for the next tick,
        # well before the leases this loop renews could expire.
        budget = time.monotonic() + LEASE_SECONDS / 6
        for mailbox_id, entry in list(self.held.items()):
            if entry.watch is not None or entry.retry_at > now or self.stopping.is_set():
                continue
            if time.monotonic() > budget:
                return
            with self.app.app_context():
                try:
                    mailbox = db.session.get(Mailbox, mailbox_id)
                    if mailbox is None:
                        entry.retry_at = now + self.refresh  # deleted: the next reading lets it go
                        continue
                    settings = server_settings(mailbox, self.app.config["TIDEMARK_ENCRYPTION_KEY"],
                                               self.app.config["TIDEMARK_CA_FILE"])
                    commit()  # a refreshed OAuth2 grant is kept
                except TransportError as exc:
                    commit()
                    entry.failures += 1
                    entry.retry_at = now + min(BACKOFF_MAX, 2 ** entry.failures)
                    entry.state, entry.since = ("polling", f"reconnecting after {exc.message}"), time.time()
                    continue
                except Exception:  # noqa: BLE001 - e.g. a secret that no key opens: logged, tried later
                    db.session.rollback()
                    log.exception("mailbox %s: its server settings could not be made", mailbox_id)
                    entry.failures += 1
                    entry.retry_at = now + BACKOFF_MAX
                    entry.state, entry.since = ("polling", "reconnecting after an unexpected error"), time.time()
                    continue
            folder = entry.key[-1]
            entry.watch = Watch(self, mailbox_id, settings, folder)
            entry.watch.start()

    def _ask_again(self) -> None:
        with self.lock:
            again, self.again = self.again, set()
        for mailbox_id in again:
            self.new_mail(mailbox_id)

    def _write_states(self, ids: list[int]) -> None:
        with self.lock:
            states = [(i, self.held[i].state, self.held[i].since) for i in ids if i in self.held]
            for i, state, since in states:
                self.held[i].written = (state, since)
        if not states:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for mailbox_id, (mode, reason), since in states:
                write_state(pipe, mailbox_id, mode, reason, since)
            pipe.execute()

    # --- letting go --------------------------------------------------------------------------------

    def _stop_watch(self, entry: Held) -> None:
        if entry.watch is not None:
            entry.watch.stop.set()
            entry.watch.join(CHECK_SECONDS + entry.watch.settings.timeout)
            entry.watch = None

    def _let_go(self, mailbox_id: int, *, release: bool = True) -> None:
        with self.lock:
            entry = self.held.pop(mailbox_id, None)
        if entry is None:
            return
        self._stop_watch(entry)
        if release:
            self.redis.eval(_RELEASE, 2, LEASE_PREFIX + str(mailbox_id), STATE_PREFIX + str(mailbox_id), self.token)

    def shutdown(self) -> None:
        """DONE and LOGOUT on every connection (in parallel), then the leases go."""
        for entry in self.held.values():
            if entry.watch is not None:
                entry.watch.stop.set()
        for mailbox_id in list(self.held):
            try:
                self._let_go(mailbox_id)
            except (RedisError, OSError):
                pass  # the lease expires by itself
        try:
            self.redis.zrem(WATCHERS, self.token)
        except (RedisError, OSError):
            pass

    def holding(self) -> dict[int, str]:
        """Mailbox id → its mode ("push" or "polling"), for tests and the log."""
        with self.lock:
            return {i: e.state[0] for i, e in self.held.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refresh", type=float, default=REFRESH_SECONDS,
                        help="seconds between two readings of the mailboxes' settings")
    args = parser.parse_args(argv)
    # Its own decisions at INFO; the transport's "logged in" for every (re)connection is noise.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    threading.stack_size(IDLE_STACK)
    app = get_app()
    with app.app_context():
        connection = redis_connection()
    watcher = Watcher(app, connection, refresh=args.refresh)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: watcher.stopping.set())
    watcher.run()


if __name__ == "__main__":
    main()
