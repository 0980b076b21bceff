"""The LMTP listener: mail pushed by the MSP's own MTA (Postfix `lmtp:`) into `protocol: lmtp` mailboxes.

    python -m workers.lmtp --listen 127.0.0.1:2424
    python -m workers.lmtp --listen unix:/run/tidemark/lmtp.sock

Per recipient (RFC 2033): RCPT names an active LMTP mailbox by its address or an alias (550
otherwise); after DATA each accepted recipient gets its own reply, 250 only once the raw mail is
committed (portal.inbound.lmtp), 451 when the database or Redis cannot be reached (the MTA keeps
the mail and tries again), 552 when the mail is larger than that mailbox takes. SIGTERM stops
accepting, lets every transaction under way finish, tells idle connections 421 and exits.
The protocol lives here; what becomes of the mail is portal.inbound.lmtp's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import re
import signal
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flask import Flask

from portal.extensions import db
from portal.inbound import lmtp as inbound
from portal.jobs import discard_pending
from portal.models.base import utcnow
from portal.models.mailboxes import MAX_MESSAGE_SIZE_LIMIT
from portal.transport.lmtp import parse_listen

log = logging.getLogger("tidemark.lmtp")

IDLE_SECONDS = 300  # a connection silent this long is closed (RFC 5321's 5 minutes)
MAX_LINE = 64 * 1024  # far above RFC 5321's 1000 octets; longer lines are refused, not buffered
MAX_RECIPIENTS = 1000
RECIPIENT_SECONDS = 1.0  # how long the answer to an RCPT lookup serves the next RCPTs of that address
MAX_LOOKED_UP = 10_000  # addresses remembered at most (then forgotten all at once)
GRACE_SECONDS = 30  # after SIGTERM, how long transactions under way may take to finish
_PATH = re.compile(r"^\s*<([^<>]*)>", re.ASCII)


@dataclass
class Transaction:
    sender: str | None = None
    recipients: list[inbound.Recipient] = field(default_factory=list)


class Keeper:
    """One thread stores what the DATA of every connection brought. The messages that arrive
    while it commits wait, and are then stored together with one commit (one flush to disk for
    all of them, not one each); every recipient hears 250 only after the commit that holds its
    message. A failure answers every message of that commit 451: none of it was committed."""

    MOST = 100  # messages in one commit at most

    def __init__(self, app: Flask):
        self.app = app
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="lmtp-keeper", daemon=True)
        self.thread.start()

    def keep(self, recipient: inbound.Recipient, raw: bytes, received_at) -> asyncio.Future:
        """A future: True stored, False stored before (a retry); its exception when not kept."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.put((loop, future, (recipient, raw, received_at)))
        return future

    def stop(self) -> None:
        self.waiting.put(None)
        self.thread.join()

    def _next_batch(self) -> list | None:
        first = self.waiting.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.MOST:
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.waiting.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        with self.app.app_context():
            while (batch := self._next_batch()) is not None:
                try:
                    inbound.redis_reachable()  # Redis away: nothing is stored, the MTA keeps the mail
                    outcomes = inbound.keep_many([delivery for _loop, _future, delivery in batch])
                except Exception as exc:  # noqa: BLE001 - database or Redis away: nothing was committed
                    log.warning("LMTP: could not keep %d message(s)", len(batch), exc_info=True)
                    outcomes = [exc] * len(batch)
                finally:
                    db.session.rollback()
                    discard_pending()
                for (loop, future, _delivery), outcome in zip(batch, outcomes):
                    loop.call_soon_threadsafe(_settle, future, outcome)
            db.session.remove()


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():  # its session was cancelled meanwhile (shutdown): the MTA sends it again
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Listener:
    """One listening socket; each connection is a Session. Recipient lookups run in `threads`
    threads, each inside an app context of `app`; the Keeper stores the messages."""

    def __init__(self, app: Flask, listen: str, *, threads: int = 8, hostname: str | None = None):
        self.app, self.listen = app, listen
        self.hostname = hostname or app.config.get("TIDEMARK_MAIL_HOST") or socket.getfqdn()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lmtp")
        self.keeper = Keeper(app)
        self.looked_up: dict[str, tuple[float, inbound.Recipient | None]] = {}
        self.stopping = asyncio.Event()
        self.sessions: set[asyncio.Task] = set()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        host, where = parse_listen(self.listen)
        if host == "unix":
            if os.path.exists(where) and stat.S_ISSOCK(os.stat(where).st_mode):
                os.unlink(where)  # left by a process that was killed
            self.server = await asyncio.start_unix_server(self._session, path=where, limit=MAX_LINE)
        else:
            self.server = await asyncio.start_server(self._session, host=host, port=where, limit=MAX_LINE)
        log.info("LMTP listening on %s", self.listen)

    @property
    def address(self) -> tuple:
        return self.server.sockets[0].getsockname()

    async def stop(self) -> None:
        """Stop accepting, let transactions under way finish (GRACE_SECONDS at most), then close."""
        self.stopping.set()
        if self.server is not None:
            self.server.close()
        if self.sessions:
            await asyncio.wait(self.sessions, timeout=GRACE_SECONDS)
        for task in self.sessions:
            task.cancel()
        self.pool.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, self.keeper.stop)
        host, where = parse_listen(self.listen)
        if host == "unix" and os.path.exists(where):
            os.unlink(where)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.sessions.add(task)
        try:
            await Session(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - one broken connection must not end the listener
            log.exception("LMTP session failed")
        finally:
            self.sessions.discard(task)
            writer.close()

    async def recipient(self, address: str) -> inbound.Recipient | None:
        """The mailbox an RCPT names, looked up again once the last answer for that address is
        RECIPIENT_SECONDS old: a steady stream of mail costs no database trip per RCPT, and a
        mailbox added, disabled or deleted is heard of within that second (one deleted after
        RCPT gets 451 at DATA, as before)."""
        key = address.strip().lower()
        now = time.monotonic()
        hit = self.looked_up.get(key)
        if hit is not None and now - hit[0] < RECIPIENT_SECONDS:
            return hit[1]
        found = await self.in_app(inbound.accept_recipient, address)
        if len(self.looked_up) >= MAX_LOOKED_UP:
            self.looked_up.clear()
        self.looked_up[key] = (now, found)
        return found

    def in_app(self, fn, *args):
        """Run fn in a pooled thread inside an app context, its session cleaned up after."""
        def run():
            with self.app.app_context():
                try:
                    return fn(*args)
                finally:
                    db.session.rollback()
                    discard_pending()
                    db.session.remove()
        return asyncio.get_running_loop().run_in_executor(self.pool, run)


class Session:
    def __init__(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.listener, self.reader, self.writer = listener, reader, writer
        self.greeted = False
        self.tx: Transaction | None = None

    async def reply(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await self.writer.drain()

    async def next_line(self) -> bytes | None:
        """The next command line; None when the connection ends, or SIGTERM came while idle."""
        read = asyncio.ensure_future(self.reader.readuntil(b"\n"))
        stop = asyncio.ensure_future(self.listener.stopping.wait())
        done, _ = await asyncio.wait({read, stop}, timeout=IDLE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if read not in done:
            read.cancel()
            await self.reply("421 4.3.2 Shutting down" if stop in done else "421 4.4.2 Idle too long")
            return None
        try:
            return read.result()
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            await self.reply("500 5.5.6 Line too long")
            return None

    async def run(self) -> None:
        await self.reply(f"220 {self.listener.hostname} LMTP Tidemark ready")
        while (line := await self.next_line()) is not None:
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = text.partition(" ")
            handler = getattr(self, f"do_{verb.upper()}", None) if verb.isalpha() else None
            if handler is None:
                await self.reply("500 5.5.2 Command not recognized")
                continue
            if await handler(arg.strip()) is False:
                return

    async def do_LHLO(self, arg: str) -> None:
        if not arg:
            await self.reply("501 5.5.4 LHLO needs a host name")
            return
        self.greeted, self.tx = True, None
        await self.reply(f"250-{self.listener.hostname}", "250-PIPELINING", "250-ENHANCEDSTATUSCODES",
                         "250-8BITMIME", f"250 SIZE {MAX_MESSAGE_SIZE_LIMIT}")

    async def do_HELO(self, arg: str) -> None:
        await self.reply("500 5.5.1 This is LMTP: say LHLO")

    do_EHLO = do_HELO

    async def do_MAIL(self, arg: str) -> None:
        if not self.greeted:
            await self.reply("503 5.5.1 LHLO first")
        elif self.tx is not None:
            await self.reply("503 5.5.1 Nested MAIL command")
        elif not arg.upper().startswith("FROM:") or not (path := _PATH.match(arg[5:])):
            await self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
        else:
            self.tx = Transaction(sender=path.group(1))
            await self.reply("250 2.1.0 Sender OK")

    async def do_RCPT(self, arg: str) -> None:
        if self.tx is None:
            await self.reply("503 5.5.1 MAIL first")
            return
        if not arg.upper().startswith("TO:") or not (path := _PATH.match(arg[3:])):
            await self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if len(self.tx.recipients) >= MAX_RECIPIENTS:
            await self.reply("452 4.5.3 Too many recipients")
            return
        try:
            found = await self.listener.recipient(path.group(1))
        except Exception:  # noqa: BLE001 - the database is away: the MTA tries again later
            log.warning("LMTP: could not look up a recipient", exc_info=True)
            await self.reply(inbound.TRY_LATER)
            return
        if found is None:
            await self.reply(inbound.UNKNOWN)
            return
        self.tx.recipients.append(found)
        await self.reply(inbound.ACCEPTED)

    async def do_DATA(self, arg: str) -> bool | None:
        if self.tx is None or not self.tx.recipients:
            await self.reply("503 5.5.1 No valid recipients" if self.tx is not None else "503 5.5.1 MAIL first")
            return None
        await self.reply("354 End data with <CR><LF>.<CR><LF>")
        try:
            raw, complete = await self._read_data(max(r.max_size for r in self.tx.recipients))
            if raw is None and not complete:
                return False  # the connection ended inside DATA: nothing was accepted
            received_at = utcnow()  # the moment the mail arrived: its time to ticket starts here
            replies = await self._deliver(raw, received_at)
            await self.reply(*replies)
        finally:
            self.tx = None
        return None

    async def _read_data(self, limit: int) -> tuple[bytes | None, bool]:
        """The message, dot-unstuffed, with CRLF line ends as received. (None, True) when it was
        larger than `limit` (read to its end and dropped); (None, False) when the connection ended."""
        chunks: list[bytes] = []
        size, too_big = 0, False
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readuntil(b"\n"), IDLE_SECONDS)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
                return None, False
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size > limit:
                too_big, chunks = True, []
            elif not too_big:
                chunks.append(line)
        return (None, True) if too_big else (b"".join(chunks), True)

    async def _deliver(self, raw: bytes | None, received_at) -> list[str]:
        """One reply per accepted recipient, in their order; each mailbox stores the mail once."""
        outcome: dict[int, str] = {}
        for recipient in self.tx.recipients:
            if recipient.mailbox_id in outcome:
                continue
            if raw is None or len(raw) > recipient.max_size:
                outcome[recipient.mailbox_id] = inbound.TOO_BIG
                continue
            try:
                await self.listener.keeper.keep(recipient, raw, received_at)
            except LookupError as exc:  # nothing of it was committed
                log.warning("LMTP: %s; answered 451", exc)
                outcome[recipient.mailbox_id] = inbound.TRY_LATER
            except Exception:  # noqa: BLE001 - database or Redis away (the Keeper logged it)
                outcome[recipient.mailbox_id] = inbound.TRY_LATER
            else:
                outcome[recipient.mailbox_id] = inbound.DELIVERED
        return [outcome[r.mailbox_id] for r in self.tx.recipients]

    async def do_RSET(self, arg: str) -> None:
        self.tx = None
        await self.reply("250 2.0.0 OK")

    async def do_NOOP(self, arg: str) -> None:
        await self.reply("250 2.0.0 OK")

    async def do_VRFY(self, arg: str) -> None:
        await self.reply("252 2.5.2 Cannot verify, send the mail")

    async def do_QUIT(self, arg: str) -> bool:
        await self.reply("221 2.0.0 Bye")
        return False


async def serve(app: Flask, listen: str, *, threads: int = 8, signals: bool = True, ready=None) -> None:
    """Listen until SIGTERM or SIGINT (`signals`), or until `listener.stopping` is set by whoever
    `ready` handed the listener to (tests, the benchmark: a thread has no signal handlers)."""
    listener = Listener(app, listen, threads=threads)
    await listener.start()
    if signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, listener.stopping.set)
    if ready is not None:
        ready(listener)
    await listener.stopping.wait()
    log.info("LMTP: stopping; %d connection(s) open", len(listener.sessions))
    started = time.monotonic()
    await listener.stop()
    log.info("LMTP: stopped in %.1f s", time.monotonic() - started)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers.lmtp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=os.environ.get("TIDEMARK_LMTP_LISTEN") or None,
                        help="HOST:PORT or unix:/path (default: TIDEMARK_LMTP_LISTEN)")
    parser.add_argument("--threads", type=int, default=8, help="database connections at once (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.listen:
        parser.error("give --listen HOST:PORT or unix:/path, or set TIDEMARK_LMTP_LISTEN")
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from workers.runtime import get_app  # noqa: PLC0415 - after the options: --help needs no app

    asyncio.run(serve(get_app(), args.listen, threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

