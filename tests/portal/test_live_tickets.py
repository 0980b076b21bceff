"""Live ticket pages (portal/live.py, portal/tickets/live.py): a change is published after its
commit and never for a rollback; the streams are scoped to the signed-in MSP, relay what
changed and who is replying, and end after their lifetime."""

import json
import socket
import time

import pytest

from portal import live
from portal.extensions import db
from portal.services import commit
from portal.services import tickets as svc
from tests.mailfactory import email
from tests.portal.conftest import fresh


@pytest.fixture
def desk(world, acme):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer",
                                           message_id="<first@contoso.com>")).ticket
    return acme, ticket


@pytest.fixture
def listener(app, redis):
    def listen(channel):
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        pubsub.get_message(timeout=1)  # the subscription's confirmation
        return pubsub
    return listen


def received(pubsub, seconds=2.0):
    found = []
    while (message := pubsub.get_message(timeout=seconds)) is not None:
        if message["type"] == "message":
            found.append(json.loads(message["data"]))
            seconds = 0.2
    return found


def test_a_customer_reply_is_published_after_its_commit_to_the_ticket_and_the_list(world, desk, listener):
    acme, ticket = desk
    on_ticket = listener(live.ticket_channel(ticket.id))
    on_list = listener(live.msp_channel(acme.msp.id))
    world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                  in_reply_to="<first@contoso.com>"))
    assert {"part": "conversation", "tab": ""} in received(on_ticket)
    assert {"part": "list", "tab": ""} in received(on_list)


def test_nothing_is_published_before_the_commit_nor_for_a_rollback(desk, listener):
    acme, ticket = desk
    on_ticket = listener(live.ticket_channel(ticket.id))
    svc.change_priority(ticket, "high", acme.tom)
    db.session.flush()
    assert received(on_ticket, 0.5) == []  # flushed, not committed: nobody may fetch it yet
    db.session.rollback()
    commit()
    assert received(on_ticket, 0.5) == []
    svc.change_priority(fresh(ticket.id), "high", acme.tom)
    commit()
    assert received(on_ticket) == [{"part": "fields", "tab": ""}]


def test_a_delivery_change_is_published_to_the_ticket_not_the_list(desk, listener):
    acme, ticket = desk
    message = next(m for m in svc.conversation(ticket) if m.direction == "in")
    on_ticket = listener(live.ticket_channel(ticket.id))
    on_list = listener(live.msp_channel(acme.msp.id))
    message.delivery_note = "touched"  # any change of one of its messages
    commit()
    assert received(on_ticket) == [{"part": "conversation", "tab": ""}]
    svc.change_priority(fresh(ticket.id), "high", acme.tom)  # a change the list's row shows
    commit()
    assert received(on_list) == [{"part": "list", "tab": ""}]  # this one only


@pytest.fixture
def silent_redis(app):
    """A Redis address that accepts connections and never answers (a hung server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        app.config["REDIS_URL"] = "redis://127.0.0.1:%d/0" % server.getsockname()[1]  # its own clients
        yield


def test_a_hung_redis_neither_fails_nor_holds_a_change_nor_a_composer(desk, tech, silent_redis, caplog):
    acme, ticket = desk
    svc.change_priority(fresh(ticket.id), "high", acme.tom)
    commit()  # publishes after the commit: given up on, logged
    assert fresh(ticket.id).priority == "high"
    assert "live pages not told of a change" in caplog.text
    assert tech.post(f"/tickets/{ticket.reference}/typing", {}).status_code == 204
    assert "colleagues not told who is replying" in caplog.text
    assert live.who_is_typing(ticket.id, but=0) == []


def open_stream(browser, url):
    browser._fresh_request()
    return browser.client.get(url)  # not Browser.get, which reads the whole body for a CSRF token


def chunks(resp):
    """The stream's events as they come, each a dict of its fields (comments as "comment")."""
    for chunk in resp.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        for block in text.split("\n\n"):
            if block.strip():
                fields = {}
                for line in block.splitlines():
                    name, _, value = line.partition(":")
                    fields[name or "comment"] = value.strip()
                yield fields


def test_the_ticket_stream_relays_changes_and_ends_after_its_lifetime(app, tech, desk):
    acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAM_SECONDS=4, TIDEMARK_LIVE_HEARTBEAT_SECONDS=1)
    resp = open_stream(tech, f"/tickets/{ticket.reference}/events")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-store"
    events = chunks(resp)
    assert next(events) == {"retry": "2000"}  # subscribed by now
    svc.change_priority(fresh(ticket.id), "high", acme.ana)
    commit()
    seen = list(events)  # to the end: the stream closes itself after its lifetime
    assert {"event": "changed", "data": "fields"} in seen
    assert {"comment": "still here"} in seen  # the heartbeat while nothing happens
    assert seen[-1] == {"event": "end", "data": "lifetime"}


def test_the_list_stream_says_when_a_ticket_arrives(app, tech, world, desk, listener):
    acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAM_SECONDS=3)
    on_list = listener(live.msp_channel(acme.msp.id))
    events = chunks(open_stream(tech, "/tickets/events"))
    next(events)
    world.deliver(acme.box, email(sender="bob@contoso.com", subject="Scanner"))
    assert [e for e in events if e.get("event") == "changed"] == [{"event": "changed", "data": "list"}]
    assert received(on_list) == [{"part": "list", "tab": ""}]  # told once, for the commit


def test_a_tab_is_not_told_of_its_own_changes(app, tech, desk):
    _acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAM_SECONDS=3)
    events = chunks(open_stream(tech, f"/tickets/{ticket.reference}/events?tab=mine"))
    next(events)
    url = f"/tickets/{ticket.reference}/fields"
    tech.post(url, {"priority": "high"}, htmx=True, headers={"X-Tidemark-Tab": "mine"})  # its answer drew it
    tech.post(url, {"priority": "low"}, htmx=True, headers={"X-Tidemark-Tab": "another"})
    assert [e for e in events if e.get("data") == "fields"] == [{"event": "changed", "data": "fields"}]


def test_colleagues_see_who_is_replying_but_not_themselves(app, tech, make_browser, desk):
    acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAM_SECONDS=2)
    ana = make_browser()
    ana.sign_in("ana@acme.example")
    acme.ana.name = "Ana"
    commit()
    assert ana.post(f"/tickets/{ticket.reference}/typing", {}).status_code == 204
    first = [e for e in chunks(open_stream(tech, f"/tickets/{ticket.reference}/events"))
             if e.get("event") == "presence"]
    assert [json.loads(e["data"])["name"] for e in first] == ["Ana"]
    own = [e for e in chunks(open_stream(ana, f"/tickets/{ticket.reference}/events"))
           if e.get("event") == "presence"]
    assert own == []
    ana.post(f"/tickets/{ticket.reference}/typing", {"stopped": "1"})
    left = [e for e in chunks(open_stream(tech, f"/tickets/{ticket.reference}/events"))
            if e.get("event") == "presence"]
    assert left == []


def test_typing_needs_the_csrf_token(tech, desk):
    _acme, ticket = desk
    resp = tech.post(f"/tickets/{ticket.reference}/typing", {}, token=False)
    assert resp.status_code == 302  # back, with "the form was out of date"
    assert live.who_is_typing(ticket.id, but=0) == []


def test_who_is_replying_is_one_sorted_set_per_ticket_trimmed_when_read(app, desk, redis):
    acme, ticket = desk
    live.typing(ticket.id, acme.ana.id, "Ana")
    live.typing(ticket.id + 1, acme.ana.id, "Ana")  # another ticket: not this one's
    key = live._typing_key(ticket.id)
    assert redis.type(key) == b"zset" and redis.zrange(key, 0, -1) == [str(acme.ana.id).encode()]
    redis.zadd(key, {acme.tom.id: 1})  # Tom's lapsed long ago
    redis.hset(key + ":names", acme.tom.id, "Tom")
    assert live.who_is_typing(ticket.id, but=0) == [
        {"part": "presence", "user": acme.ana.id, "name": "Ana", "stopped": False}]
    assert redis.zscore(key, acme.tom.id) is None  # trimmed by its score
    assert live.who_is_typing(ticket.id, but=acme.ana.id) == []
    live.typing(ticket.id, acme.ana.id, "Ana", stopped=True)
    assert live.who_is_typing(ticket.id, but=0) == []


def test_another_msps_ticket_has_no_stream_no_parts_and_no_presence(world, tech, desk):
    other = world.msp("Other MSP")
    box = world.mailbox(other, address="help@other.example", acknowledge=False)
    for subject in ("One", "Two"):
        theirs = world.deliver(box, email(to=["help@other.example"], subject=subject)).ticket
    assert theirs.reference == "T-2"  # ours has only T-1
    for path in ("/events", "/parts/conversation"):
        assert tech.get(f"/tickets/T-2{path}").status_code == 404
    assert tech.post("/tickets/T-2/typing", {}).status_code == 404
    assert live.who_is_typing(theirs.id, but=0) == []


def test_a_part_is_drawn_again_as_on_the_page(tech, world, desk):
    acme, ticket = desk
    world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                  in_reply_to="<first@contoso.com>", body="Still broken, sorry"))
    body = tech.hx_get(f"/tickets/{ticket.reference}/parts/conversation").get_data(as_text=True)
    assert body.startswith("{#") is False and 'id="ticket-conversation"' in body and "Still broken" in body
    assert tech.get(f"/tickets/{ticket.reference}/parts/nothing").status_code == 404
    facts = tech.hx_get(f"/tickets/{ticket.reference}/parts/facts").get_data(as_text=True)
    assert "<dt>Status</dt>" in facts


def test_a_person_holds_four_streams_at_most_and_a_closed_one_frees_its_place(app, tech, desk):
    _acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAM_SECONDS=30)
    url = f"/tickets/{ticket.reference}/events"
    held = [open_stream(tech, url) for _ in range(4)]
    assert [r.status_code for r in held] == [200] * 4
    refused = open_stream(tech, url)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "120"
    assert "refreshes itself every 30 seconds" in refused.get_data(as_text=True)
    events = chunks(held[0])
    next(events)
    events.close()  # the tab went away while streaming
    held[0].close()
    assert open_stream(tech, url).status_code == 200


def test_a_stream_never_read_gives_its_place_back_when_its_response_closes(app, tech, desk):
    """The client went away before the server read the first event: the generator never ran."""
    _acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAMS_PER_USER=1, TIDEMARK_LIVE_STREAM_SECONDS=30)
    url = f"/tickets/{ticket.reference}/events"
    unread = open_stream(tech, url)
    assert unread.status_code == 200 and open_stream(tech, url).status_code == 429
    unread.close()
    assert open_stream(tech, url).status_code == 200


def test_a_process_streams_on_half_its_threads_at_most(app, tech, make_browser, desk):
    acme, ticket = desk
    assert app.config["TIDEMARK_WEB_THREADS"] == 16 and app.config["TIDEMARK_LIVE_STREAMS_PER_PROCESS"] == 8
    app.config.update(TIDEMARK_LIVE_STREAMS_PER_PROCESS=2, TIDEMARK_LIVE_STREAM_SECONDS=30)
    ana = make_browser()
    ana.sign_in("ana@acme.example")
    url = f"/tickets/{ticket.reference}/events"
    first, _second = open_stream(tech, url), open_stream(ana, url)
    assert open_stream(ana, url).status_code == 429  # Ana has one: the process is full
    first.close()
    assert open_stream(ana, url).status_code == 200
    assert tech.get(f"/tickets/{ticket.reference}").status_code == 200  # pages still answer


def test_an_msps_desk_holds_a_bounded_number_of_streams(app, tech, make_browser, world, desk):
    acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAMS_PER_MSP=1, TIDEMARK_LIVE_STREAM_SECONDS=30)
    held = open_stream(tech, "/tickets/events")
    assert held.status_code == 200
    ana = make_browser()
    ana.sign_in("ana@acme.example")
    assert open_stream(ana, "/tickets/events").status_code == 429
    other = world.msp("Other MSP")
    world.user(other, email="olga@other.example", role="technician")
    olga = make_browser()
    olga.sign_in("olga@other.example")
    assert open_stream(olga, "/tickets/events").status_code == 200  # another MSP's places


def test_each_part_costs_only_the_queries_it_needs(tech, world, desk, sql_statements):
    """A stream's event makes every open tab fetch the changed parts: each part queries what it
    draws (not the whole page's ~15), and no more with more colleagues or messages."""
    acme, ticket = desk
    for n in range(6):
        world.user(acme.msp, email=f"tech{n}@acme.example", role="technician")
        world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                      in_reply_to="<first@contoso.com>", body=f"Reply {n}"))
    url = f"/tickets/{ticket.reference}"
    tech.hx_get(f"{url}/parts/facts")  # the session's first request warms up
    with sql_statements() as page:
        assert tech.get(url).status_code == 200
    # fields: the user, the ticket, the assignees, the MSP's allow-list of types and the types in use
    bounds = {"conversation": 5, "staff": 4, "facts": 7, "fields": 5}  # the page: 15+
    for name, most in bounds.items():
        with sql_statements() as seen:
            assert tech.hx_get(f"{url}/parts/{name}").status_code == 200
        assert len(seen) <= most < len(page), (name, [" ".join(s.split())[:120] for s in seen])


def test_a_stream_is_not_buffered_and_lives_five_minutes_by_default(app, tech, desk, redis):
    acme, ticket = desk
    assert app.config["TIDEMARK_LIVE_STREAM_SECONDS"] == 300 and app.config["TIDEMARK_LIVE_HEARTBEAT_SECONDS"] == 15
    before = time.time()
    resp = open_stream(tech, f"/tickets/{ticket.reference}/events")
    assert resp.headers["X-Accel-Buffering"] == "no" and resp.headers["Cache-Control"] == "no-store"
    # Its place is held for its lifetime, a heartbeat and 5 s: 300 s of streaming.
    [(_me, until)] = redis.zrange(f"{app.config['TIDEMARK_QUEUE']}:live:streams:{acme.tom.id}", 0, -1,
                                  withscores=True)
    assert before + 320 <= until <= time.time() + 320
    resp.close()
