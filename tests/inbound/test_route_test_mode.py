"""Routes in test on a real database: what they would have done goes into the trace, the ingest
adds to their count in SQL (concurrent runs lose nothing), and the routing check shows them."""

import threading
import uuid

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.inbound.batch import decide_batch, decide_one
from portal.inbound.context import IngestContext
from portal.inbound.fetch import store_raw
from portal.inbound.replay import CheckInput, Pipeline, check_routing
from portal.models import Mailbox, Route
from portal.services import ValidationError, commit
from portal.services.routes import get_route, route_input_of, save_route
from tests.mailfactory import email


@pytest.fixture
def trial(world):
    """desk@acme.example: the new rule "Contoso VIP" in test, the live "VIP" route for the same
    address, and the fallback."""
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    fabrikam = world.client(msp, "Fabrikam")
    box = world.mailbox(msp, address="desk@acme.example", aliases=["vip@acme.example"], acknowledge=False, routes=[
        {"name": "Contoso VIP", "client": contoso, "recipients": ["vip@acme.example"], "senders": ["contoso.com"],
         "default_priority": "high", "test_mode": True},
        {"name": "VIP", "client": fabrikam, "recipients": ["vip@acme.example"]},
        {"name": "Everything else", "client": msp, "fallback": True},
    ])
    return box, msp, contoso, fabrikam


def hits(name: str) -> int:
    db.session.expire_all()
    return db.session.scalar(select(Route.test_hits).where(Route.name == name))


def context(app, box) -> IngestContext:
    return IngestContext(box, app.config["SECRET_KEY"].encode(), app.config["TIDEMARK_MAIL_HOST"])


def stored(box, **kw):
    raw = store_raw(box, email(to=["vip@acme.example"], sender="ann@contoso.com", **kw),
                    server_id=uuid.uuid4().hex, folder="INBOX")
    db.session.flush()
    return raw


def test_a_matching_route_in_test_is_traced_and_counted_and_the_next_route_files_the_mail(world, trial):
    box, _msp, _contoso, fabrikam = trial
    first = world.deliver(box, email(to=["vip@acme.example"], sender="ann@contoso.com", subject="one"))
    assert first.ticket.client_id == fabrikam.id and first.ticket.priority == "normal"
    assert "route 'Contoso VIP' (test) would have filed this under Contoso with priority high; not applied, " \
           "the next route decides" in first.trace
    assert "route: route 'VIP' (recipient) → Fabrikam" in first.trace
    assert hits("Contoso VIP") == 1
    world.deliver(box, email(to=["vip@acme.example"], sender="bob@contoso.com", subject="two"))
    other = world.deliver(box, email(to=["vip@acme.example"], sender="eve@elsewhere.example", subject="three"))
    assert not other.tested and hits("Contoso VIP") == 2 and hits("VIP") == 0


def test_a_batch_adds_all_its_test_hits(app, trial):
    box = trial[0]
    batch = [stored(box, subject=f"batch {i}") for i in range(3)]
    results = decide_batch(batch, context(app, box))
    commit()
    assert [r.outcome for r in results] == ["created"] * 3
    assert hits("Contoso VIP") == 3


def test_a_batch_rolled_back_counts_its_messages_once(app, trial, monkeypatch):
    """A batch that fails as a whole is decided one message at a time: the hits are counted then,
    not twice."""
    box = trial[0]
    batch = [stored(box, subject=f"batch {i}") for i in range(2)]
    ctx = context(app, box)
    monkeypatch.setattr(ctx.writer, "write", lambda: (_ for _ in ()).throw(RuntimeError("disk full")))
    results = decide_batch(batch, ctx)
    commit()
    assert [r.outcome for r in results] == ["created"] * 2
    assert hits("Contoso VIP") == 2


def test_two_ingests_at_once_lose_no_count(app, trial):
    """Run B reads the routes, run A then decides and commits, and only then B decides: B's count
    is added to A's in SQL, not written back from the value it read."""
    box = trial[0]
    mine, theirs = stored(box, subject="A"), stored(box, subject="B")
    commit()
    box_id, their_id = box.id, theirs.id
    ready, go, failures = threading.Event(), threading.Event(), []

    def run_b():
        with app.app_context():
            try:
                ctx = context(app, db.session.get(Mailbox, box_id))
                assert ctx.routes_by_id  # the route rows, with their count, are read now
                ready.set()
                go.wait()
                result = decide_one(db.session.get(type(theirs), their_id), ctx, max_tries=1)
                commit()
                assert result is not None and result.tested
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failures.append(exc)
                ready.set()

    other = threading.Thread(target=run_b)
    other.start()
    try:
        assert ready.wait(60)
        assert decide_one(mine, context(app, box), max_tries=1) is not None
        commit()
    finally:
        go.set()
        other.join(60)
    assert not failures, failures
    assert hits("Contoso VIP") == 2


def test_the_routing_check_shows_what_a_route_in_test_would_do_and_counts_nothing(app, trial):
    box, msp, _c, _f = trial
    result = check_routing(msp.id, CheckInput(mailbox_id=box.id, sender="ann@contoso.com", to="vip@acme.example",
                                              subject="check"),
                           Pipeline(app.config["SECRET_KEY"].encode(), app.config["TIDEMARK_MAIL_HOST"]))
    assert result.route == "VIP" and result.client == "Fabrikam"
    assert result.tested == [("Contoso VIP", "filed this under Contoso with priority high")]
    commit()
    assert hits("Contoso VIP") == 0


def test_the_fallback_route_cannot_be_in_test(world, trial):
    box = trial[0]
    fallback = next(r for r in box.routes if r.fallback)
    data = route_input_of(fallback)
    data.test_mode = True
    with pytest.raises(ValidationError) as refused:
        save_route(box, data, actor=None, route=get_route(box, fallback.id))
    assert "fallback route cannot be in test" in refused.value.errors["test_mode"][0]
