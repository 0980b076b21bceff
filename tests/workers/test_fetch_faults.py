"""Fetching heals by itself after a fault, and two fetches of one mailbox at once (the Redis lock
gone) still thread every reply onto its root's ticket: real Dovecot, real Redis, real RQ."""

import random
import threading
import time

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Mailbox, Message, RawMessage, Ticket
from portal.services import commit
from portal.services.fetching import run_fetch
from portal.transport import open_session
from tests.mailfactory import email
from tests.workers.test_fetch import acme, make_mailbox  # noqa: F401 - the fixture and the helper


def threaded_mail(roots: int, replies: int, seed: int = 7) -> tuple[list[bytes], dict[str, str]]:
    """Roots and replies interleaved, each reply naming its root in References only; returns the
    mails in delivery order and {reply Message-ID: root Message-ID}."""
    rng = random.Random(seed)
    mails, root_of, root_ids = [], {}, []
    order = ["root"] * roots + ["reply"] * replies
    rng.shuffle(order)
    order.remove("root")
    order.insert(0, "root")  # a reply needs an earlier root
    for n, kind in enumerate(order):
        mid = f"<m{n}@threads.example>"
        if kind == "root":
            root_ids.append(mid)
            mails.append(email(subject=f"case {n}", message_id=mid))
        else:
            root = rng.choice(root_ids)
            root_of[mid] = root
            mails.append(email(subject=f"more on {root}", message_id=mid, references=[root]))
    return mails, root_of


def assert_threaded(roots: int, total: int, root_of: dict[str, str]) -> None:
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == total
    assert db.session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")) == total
    assert db.session.scalar(select(func.count()).select_from(RawMessage).where(RawMessage.state != "decided")) == 0
    ticket_of = dict(db.session.execute(select(Message.message_id, Message.ticket_id).where(Message.direction == "in")).all())
    empty = db.session.scalar(select(func.count()).select_from(Ticket).where(
        ~select(Message.id).where(Message.ticket_id == Ticket.id).exists()))
    misplaced = [reply for reply, root in root_of.items() if ticket_of[reply] != ticket_of[root]]
    assert (db.session.scalar(select(func.count()).select_from(Ticket)), empty, len(misplaced)) == (roots, 0, 0)


def _fetch_in_thread(app, mailbox_id: int, start: threading.Barrier, delay: float, errors: list) -> None:
    try:
        with app.app_context():
            start.wait()
            time.sleep(delay)
            cfg = app.config
            run_fetch(db.session.get(Mailbox, mailbox_id), open_session=open_session,
                      keys=cfg["TIDEMARK_ENCRYPTION_KEY"], secret=cfg["SECRET_KEY"].encode(), commit=commit,
                      batch=20, host=cfg["TIDEMARK_MAIL_HOST"])
            db.session.remove()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_two_fetches_of_one_mailbox_at_once_thread_every_reply_onto_its_root(
        world, app, acme, dovecot, mail_user, delay):  # noqa: F811
    mails, root_of = threaded_mail(roots=60, replies=140)
    dovecot.deliver_many(mail_user, mails)
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    start, errors = threading.Barrier(2), []
    # Straight to run_fetch: the Redis lock of the fetch job is not there to keep them apart.
    threads = [threading.Thread(target=_fetch_in_thread, args=(app, mailbox.id, start, d, errors))
               for d in (0.0, delay)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert_threaded(60, len(mails), root_of)
