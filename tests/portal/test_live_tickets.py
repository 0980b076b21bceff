"""Live ticket pages (portal/live.py, portal/tickets/live.py): a change is published after its
commit and never for a rollback; the streams are scoped to the signed-in MSP, relay what
changed and who is replying, and end after their lifetime."""

import json

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
    assert {"part": "list", "tickets": [ticket.id], "tab": ""} in received(on_list)


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


def test_a_delivery_change_is_published(desk, listener):
    acme, ticket = desk
    message = next(m for m in svc.conversation(ticket) if m.direction == "in")
    on_ticket = listener(live.ticket_channel(ticket.id))
    message.delivery_note = "touched"  # any change of one of its messages
    commit()
    assert received(on_ticket) == [{"part": "conversation", "tab": ""}]


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
    assert received(on_list)[0]["tickets"] == [ticket.id + 1]  # the new ticket only


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


def test_a_person_holds_a_bounded_number_of_streams(app, tech, desk, redis):
    _acme, ticket = desk
    app.config.update(TIDEMARK_LIVE_STREAMS_PER_USER=2, TIDEMARK_LIVE_STREAM_SECONDS=30)
    url = f"/tickets/{ticket.reference}/events"
    first, second = open_stream(tech, url), open_stream(tech, url)
    assert (first.status_code, second.status_code) == (200, 200)
    refused = open_stream(tech, url)
    assert refused.status_code == 429 and "close some tabs" in refused.get_data(as_text=True)
    events = chunks(first)
    next(events)
    events.close()  # the tab went away: its place is free again
    first.close()
    assert open_stream(tech, url).status_code == 200
