"""The inbound pipeline (DESIGN steps 3–9) on a real database, one rule per test."""

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.mail.refs import RefFormat
from portal.models import Contact, Message, RawMessage, Ticket, TicketLink
from tests.mailfactory import email


@pytest.fixture
def acme(world):
    msp = world.msp("Acme MSP", waterline="## Please reply above this line ##")
    contoso = world.client(msp, "Contoso", allow=["contoso.com", "boss@gmail.com"], waterline="Best regards")
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.example"])
    support = world.mailbox(msp)
    return msp, contoso, fabrikam, support


def tickets():
    return db.session.scalars(select(Ticket).order_by(Ticket.id)).all()


# --- creating and routing without routes ---------------------------------------------------------


def test_new_mail_creates_a_ticket_for_the_allow_listed_client_with_a_contact(world, acme):
    _msp, contoso, _fab, support = acme
    result = world.deliver(support, email(sender="Alice Ex <alice@contoso.com>",
                                          body="Help.\n\nBest regards\nAlice\n"))
    assert result.outcome == "created"
    t = result.ticket
    assert (t.reference, t.client_id, t.status, t.subject) == ("T-1", contoso.id, "new", "Printer on fire")
    assert t.contact.email == "alice@contoso.com" and t.contact.name == "Alice Ex"
    assert result.message.body_text.strip() == "Help."  # cut at Contoso's waterline
    assert "Best regards" in result.message.full_text
    assert any("domain contoso.com is on an allow-list" in line for line in result.trace)


def test_references_are_sequential_per_msp(world, acme):
    support = acme[3]
    refs = [world.deliver(support, email(subject=f"n{i}")).ticket.reference for i in range(3)]
    other = world.msp("Other MSP")
    other_box = world.mailbox(other, address="help@other.example")
    assert refs == ["T-1", "T-2", "T-3"]
    assert world.deliver(other_box, email(to=["help@other.example"])).ticket.reference == "T-1"


def test_address_on_an_allow_list_beats_a_domain(world, acme):
    msp, contoso, fabrikam, support = acme
    world.client(msp, "Gmail users", allow=["gmail.com"])
    assert world.deliver(support, email(sender="boss@gmail.com")).ticket.client_id == contoso.id


def test_a_subdomain_belongs_to_the_allow_listed_domain(world, acme):
    assert world.deliver(acme[3], email(sender="it@mail.fabrikam.example")).ticket.client_id == acme[2].id


def test_known_contact_then_catch_all(world, db, acme):
    msp, _contoso, fabrikam, support = acme
    db.session.add(Contact(msp_id=msp.id, client_id=fabrikam.id, email="freelancer@yahoo.example"))
    db.session.commit()
    assert world.deliver(support, email(sender="freelancer@yahoo.example")).ticket.client_id == fabrikam.id
    stranger = world.deliver(support, email(sender="who@nowhere.example"))
    assert stranger.ticket.client_id == msp.id
    assert any("catch-all" in line for line in stranger.trace)


def test_mail_for_a_disabled_client_goes_to_the_mailbox_client(world, acme):
    from portal.services import clients, commit

    msp, contoso, _f, support = acme
    clients.set_client_disabled(contoso, True, None)
    commit()
    result = world.deliver(support, email(sender="alice@contoso.com"))
    assert result.ticket.client_id == msp.id and any("disabled" in line for line in result.trace)


def test_bcc_only_mail_is_unprocessed_without_a_wildcard_route(world, acme):
    result = world.deliver(acme[3], email(to=["someone@contoso.com"]))
    assert result.outcome == "unprocessed" and result.ticket is None
    assert "BCC" in result.trace[-1]
    assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0


def test_ignore_list_records_and_creates_nothing(world, acme):
    msp, *_ , support = acme
    box = world.mailbox(msp, address="alerts@acme.example", ignore_senders=["noreply@monitor.example", "*@spam.example"],
                        ignore_subjects=["[WARN]"])
    for raw in (email(sender="noreply@monitor.example", to=["alerts@acme.example"]),
                email(sender="x@spam.example", to=["alerts@acme.example"]),
                email(subject="[warn] disk 91%", to=["alerts@acme.example"])):
        result = world.deliver(box, raw)
        assert result.outcome == "ignored" and result.ticket is None
    assert tickets() == []


def test_mail_before_the_sync_start_date_is_ignored(world, acme):
    from datetime import date, datetime, timezone

    msp = acme[0]
    box = world.mailbox(msp, address="new@acme.example", sync_start_date=date(2026, 6, 1))
    old = world.deliver(box, email(to=["new@acme.example"], date=datetime(2026, 5, 1, tzinfo=timezone.utc)))
    assert old.outcome == "ignored" and "sync start date" in old.trace[-1]


# --- own mail and duplicates ----------------------------------------------------------------------


def test_our_own_mail_is_recorded_not_processed(world, db, acme):
    msp, *_, support = acme
    db.session.add(Message(msp_id=msp.id, direction="out", message_id="<ours.1@acme.example>"))
    db.session.commit()
    result = world.deliver(support, email(message_id="<ours.1@acme.example>"))
    assert result.outcome == "own" and tickets() == []


def test_the_same_email_to_the_mailbox_and_its_alias_makes_one_ticket(world, acme):
    msp = acme[0]
    box = world.mailbox(msp, address="desk@acme.example", aliases=["help@acme.example"])
    raw = email(to=["desk@acme.example", "help@acme.example"])
    first = world.deliver(box, b"Delivered-To: desk@acme.example\r\n" + raw)
    second = world.deliver(box, b"Delivered-To: help@acme.example\r\n" + raw)
    assert first.outcome == "created" and second.outcome == "duplicate"
    assert second.message.duplicate_of_id == first.message.id
    assert len(tickets()) == 1


def test_a_copy_in_another_mailbox_is_processed_there(world, acme):
    msp, *_, support = acme
    other = world.mailbox(msp, address="sales@acme.example")
    raw = email(to=["support@acme.example", "sales@acme.example"])
    assert world.deliver(support, raw).outcome == "created"
    assert world.deliver(other, raw).outcome == "created"
    assert len(tickets()) == 2


def test_same_content_resent_with_new_headers_is_a_duplicate(world, acme):
    support = acme[3]
    raw = email(message_id="<dup@x>")
    world.deliver(support, raw)
    again = world.deliver(support, b"Received: from relay2 by mx; Sun, 1 Nov 2026\r\n" + raw)
    assert again.outcome == "duplicate"


# --- threading -------------------------------------------------------------------------------------


def reply_to(result, **kw):
    return email(in_reply_to=result.message.message_id, subject="Re: " + result.message.subject, **kw)


def test_in_reply_to_and_references_thread_onto_the_ticket(world, acme):
    support = acme[3]
    first = world.deliver(support, email())
    second = world.deliver(support, reply_to(first))
    third = world.deliver(support, email(references=["<unknown@x>", second.message.message_id], subject="x"))
    assert second.outcome == third.outcome == "appended"
    assert second.ticket.id == third.ticket.id == first.ticket.id
    assert "References matched" in third.trace[0]


@pytest.mark.parametrize("status, outcome, after", [("new", "appended", "new"), ("open", "appended", "open"),
                                                    ("waiting", "appended", "open"), ("resolved", "reopened", "open")])
def test_status_rules_for_replies(world, db, acme, status, outcome, after):
    support = acme[3]
    first = world.deliver(support, email())
    first.ticket.status, first.ticket.new_information = status, False
    db.session.commit()
    result = world.deliver(support, reply_to(first))
    assert result.outcome == outcome and result.ticket.id == first.ticket.id
    assert result.ticket.status == after and result.ticket.new_information is True


def test_reply_to_a_closed_ticket_opens_a_linked_one_with_the_contacts(world, db, acme):
    support = acme[3]
    first = world.deliver(support, email(cc=["bob@contoso.com"]))
    first.ticket.status = "closed"
    db.session.commit()
    result = world.deliver(support, reply_to(first, sender="bob@contoso.com"))
    assert result.outcome == "created" and result.ticket.id != first.ticket.id
    assert result.ticket.client_id == first.ticket.client_id
    assert result.ticket.contact.email == "alice@contoso.com" and "bob@contoso.com" in result.ticket.cc
    link = db.session.scalar(select(TicketLink))
    assert (link.ticket_id, link.linked_id, link.kind) == (result.ticket.id, first.ticket.id, "follow-up")


def test_reply_to_an_archived_ticket_opens_a_new_one_for_the_same_client(world, db, acme):
    support = acme[3]
    first = world.deliver(support, email())
    first.ticket.status = "archived"
    db.session.commit()
    result = world.deliver(support, reply_to(first))
    assert result.outcome == "created" and result.ticket.client_id == first.ticket.client_id
    assert result.ticket.id != first.ticket.id


def test_reply_to_a_ticket_of_a_disabled_client_opens_one_in_the_mailbox_client(world, db, acme):
    msp, contoso, _f, support = acme
    first = world.deliver(support, email())
    contoso.disabled = True
    db.session.commit()
    result = world.deliver(support, reply_to(first))
    assert result.ticket.id != first.ticket.id and result.ticket.client_id == msp.id


def test_reply_to_a_merged_ticket_goes_to_its_target(world, db, acme):
    support = acme[3]
    a = world.deliver(support, email(subject="a"))
    b = world.deliver(support, email(subject="b"))
    a.ticket.status, a.ticket.merged_into_id = "merged", b.ticket.id
    db.session.commit()
    result = world.deliver(support, reply_to(a))
    assert result.ticket.id == b.ticket.id


def test_reply_to_a_split_ticket_goes_to_every_child(world, db, acme):
    support = acme[3]
    parent = world.deliver(support, email(subject="two problems"))
    kids = [world.deliver(support, email(subject=f"part {i}")).ticket for i in (1, 2)]
    parent.ticket.status = "split"
    for kid in kids:
        kid.split_from_id = parent.ticket.id
    db.session.commit()
    world.deliver(support, reply_to(parent, body="about both"))
    for kid in kids:
        db.session.refresh(kid)
        assert any(m.body_text.startswith("about both") for m in kid.messages)


def test_out_of_office_to_our_acknowledgement_changes_nothing(world, db, acme):
    msp, *_, support = acme
    first = world.deliver(support, email())
    ticket = first.ticket
    ticket.status, ticket.new_information = "waiting", False
    db.session.add(Message(msp_id=msp.id, mailbox_id=support.id, ticket_id=ticket.id, direction="out",
                           message_id="<ack.1@acme.example>", details={"automatic": True}))
    db.session.commit()
    ooo = world.deliver(support, email(in_reply_to="<ack.1@acme.example>", subject="Automatic reply: Printer",
                                       headers={"Auto-Submitted": "auto-replied"}))
    assert ooo.outcome == "appended" and ooo.ticket.id == ticket.id
    db.session.refresh(ticket)
    assert ticket.status == "waiting" and ticket.new_information is False


def test_a_bounce_threads_onto_the_ticket_of_the_bounced_mail(world, db, acme):
    msp, *_, support = acme
    first = world.deliver(support, email())
    db.session.add(Message(msp_id=msp.id, mailbox_id=support.id, ticket_id=first.ticket.id, direction="out",
                           message_id="<reply.7@acme.example>"))
    db.session.commit()
    dsn = (
        "From: MAILER-DAEMON@mx.contoso.com\r\nTo: support@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn1@mx>\r\nDate: Sun, 1 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        "Final-Recipient: rfc822; gone@contoso.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <reply.7@acme.example>\r\nSubject: x\r\n"
        "--b--\r\n"
    ).encode()
    result = world.deliver(support, dsn)
    assert result.ticket is not None and result.ticket.id == first.ticket.id
    assert result.message.auto_generated


def test_subject_reference_from_a_stranger_does_not_append(world, acme):
    support = acme[3]
    first = world.deliver(support, email(sender="alice@contoso.com"))
    result = world.deliver(support, email(sender="mallory@evil.example", subject=f"Re: [{first.ticket.reference}] hi"))
    assert result.outcome == "created" and result.ticket.id != first.ticket.id
    assert any("not allowed to write" in line for line in result.trace)


@pytest.mark.parametrize("sender", ["alice@contoso.com", "carol@contoso.com", "bob@contoso.com"])
def test_subject_reference_from_the_contact_a_cc_or_the_allow_list_appends(world, acme, sender):
    support = acme[3]
    first = world.deliver(support, email(sender="alice@contoso.com", cc=["bob@contoso.com"]))
    result = world.deliver(support, email(sender=sender, subject=f"RE: AW: [{first.ticket.reference}] Printer"))
    assert result.outcome == "appended" and result.ticket.id == first.ticket.id


def test_body_reference_within_the_first_5000_characters(world, acme):
    support = acme[3]
    first = world.deliver(support, email())
    near = world.deliver(support, email(subject="other", body=f"About [{first.ticket.reference}]: still broken."))
    far = world.deliver(support, email(subject="other2", body="x" * 5001 + f" [{first.ticket.reference}]"))
    assert near.ticket.id == first.ticket.id and far.ticket.id != first.ticket.id
    assert "body reference T-1" in near.trace[0]


def test_a_bare_reference_in_the_body_is_no_reference(world, acme):
    support = acme[3]
    first = world.deliver(support, email())
    for n in range(2, 5):
        world.deliver(support, email(subject=f"filler {n}"))
    model = world.deliver(support, email(subject="Delivery", body="Model T-4 arrived, the T-1 one did not."))
    assert model.outcome == "created" and model.ticket.reference == "T-5"
    assert not any("reference" in line for line in model.trace), model.trace
    bracketed = world.deliver(support, email(subject="Delivery", body="Model [T-4] arrived."))
    assert bracketed.outcome == "appended" and bracketed.ticket.reference == "T-4"
    assert first.ticket.reference == "T-1"


def test_a_body_reference_follows_the_msps_own_prefix(world):
    msp = world.msp("Demo MSP", reference_prefix="DEMO")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="help@demo.example")
    first = world.deliver(box, email(to=["help@demo.example"]))
    assert first.ticket.reference == "DEMO-1"
    bare = world.deliver(box, email(to=["help@demo.example"], subject="a", body="Part DEMO-1 is broken"))
    tagged = world.deliver(box, email(to=["help@demo.example"], subject="b", body="About [DEMO-1] again"))
    assert bare.outcome == "created" and tagged.ticket.id == first.ticket.id


def test_signed_token_threads_and_a_forged_one_does_not(world, app, acme):
    support = acme[3]
    first = world.deliver(support, email())
    fmt = RefFormat()
    token = fmt.token(first.ticket.reference, app.config["SECRET_KEY"].encode())
    good = world.deliver(support, email(sender="mallory@evil.example", subject="x", body=f"hello\n{token}"))
    forged = world.deliver(support, email(sender="mallory@evil.example", subject="y",
                                          body=f"[ref:{first.ticket.reference}.aaaaa]"))
    assert good.ticket.id == first.ticket.id
    assert forged.ticket.id != first.ticket.id


@pytest.mark.parametrize("mode", ["mixed", "only"])
def test_plus_address_tag_threads_when_the_mode_allows(world, app, acme, mode):
    msp = acme[0]
    box = world.mailbox(msp, address="desk@acme.example", plus_addressing=mode)
    first = world.deliver(box, email(to=["desk@acme.example"]))
    plus = RefFormat().plus_address("desk@acme.example", first.ticket.reference, app.config["SECRET_KEY"].encode())
    result = world.deliver(box, email(to=[plus], subject="no reference here"))
    assert result.ticket.id == first.ticket.id and "plus address tag" in result.trace[0]
    # In `only` mode nothing else threads: an In-Reply-To alone makes a new ticket.
    irt = world.deliver(box, email(to=["desk@acme.example"], in_reply_to=first.message.message_id, subject="z"))
    assert (irt.ticket.id == first.ticket.id) is (mode == "mixed")


def test_plus_tag_is_ignored_when_the_mode_is_off(world, app, acme):
    support = acme[3]
    first = world.deliver(support, email())
    plus = RefFormat().plus_address("support@acme.example", first.ticket.reference, app.config["SECRET_KEY"].encode())
    assert world.deliver(support, email(to=[plus], subject="q")).ticket.id != first.ticket.id


# --- two mailboxes of one MSP ------------------------------------------------------------------------


def test_reply_all_adding_a_second_mailbox_appends_in_the_first_and_links_in_the_second(world, db, acme):
    msp, *_, support = acme
    sales = world.mailbox(msp, address="sales@acme.example")
    first = world.deliver(support, email())
    reply = reply_to(first, to=["support@acme.example", "sales@acme.example"])
    in_support = world.deliver(support, reply)
    in_sales = world.deliver(sales, reply)
    assert in_support.outcome == "appended" and in_support.ticket.id == first.ticket.id
    assert in_sales.outcome == "created" and in_sales.ticket.mailbox_id == sales.id
    link = db.session.scalar(select(TicketLink).where(TicketLink.ticket_id == in_sales.ticket.id))
    assert link.linked_id == first.ticket.id and link.kind == "other-mailbox"


def test_reply_that_swaps_the_address_creates_a_ticket_only_where_it_was_sent(world, db, acme):
    msp, *_, support = acme
    sales = world.mailbox(msp, address="sales@acme.example")
    first = world.deliver(support, email())
    swapped = world.deliver(sales, reply_to(first, to=["sales@acme.example"]))
    assert swapped.outcome == "created" and swapped.ticket.mailbox_id == sales.id
    db.session.refresh(first.ticket)
    assert [m.direction for m in first.ticket.messages] == ["in", "out"]  # its mail and our acknowledgement


def test_a_reference_to_another_msps_ticket_is_ignored(world, acme):
    support = acme[3]
    other = world.msp("Other MSP")
    other_box = world.mailbox(other, address="help@other.example")
    theirs = world.deliver(other_box, email(to=["help@other.example"], sender="x@contoso.com"))
    result = world.deliver(support, reply_to(theirs))
    assert result.outcome == "created" and result.ticket.msp_id == acme[0].id


# --- routes -----------------------------------------------------------------------------------------


@pytest.fixture
def routed(world, acme):
    msp, contoso, fabrikam, _ = acme
    box = world.mailbox(msp, address="desk@acme.example", aliases=["vip@acme.example", "old@acme.example"], routes=[
        {"name": "VIP", "client": contoso, "recipients": ["vip@acme.example"], "acknowledge": False},
        {"name": "Partner BCC", "client": fabrikam, "recipients": ["*"], "senders": ["*@partner.example"]},
        {"name": "Invoices", "client": fabrikam, "recipients": ["desk@acme.example"], "attachment_types": ["pdf"]},
        {"name": "Everything else", "client": msp, "fallback": True},
    ])
    return box, msp, contoso, fabrikam


def test_the_body_is_cut_at_the_waterline_of_the_client_the_mail_is_routed_to(world, routed):
    """The body is cut ahead for the sender's allow-listed client (Fabrikam, no waterline of its
    own: the MSP's); the VIP route gives the mail to Contoso, whose waterline must win."""
    box = routed[0]
    body = "Please help.\nBest regards\nIvo\n## Please reply above this line ##\nold text"
    vip = world.deliver(box, email(to=["vip@acme.example"], sender="ivo@fabrikam.example", body=body))
    assert vip.message.body_text.strip() == "Please help."
    plain = world.deliver(box, email(to=["desk@acme.example"], sender="ivo@fabrikam.example", body=body,
                                     subject="other"))
    assert plain.ticket.client_id == routed[1].id  # the fallback route: the MSP's own waterline
    assert plain.message.body_text.strip() == "Please help.\nBest regards\nIvo"


def test_exact_route_takes_mail_to_its_recipient(world, routed):
    box, _msp, contoso, _f = routed
    result = world.deliver(box, email(to=["vip@acme.example"], sender="x@anywhere.example"))
    assert result.ticket.client_id == contoso.id and "route 'VIP'" in " ".join(result.trace)
    assert result.message.details["acknowledge"] is False


def test_wildcard_route_catches_bcc_from_its_senders(world, routed):
    box, _msp, _c, fabrikam = routed
    result = world.deliver(box, email(to=["someone@elsewhere.example"], sender="ops@partner.example"))
    assert result.ticket.client_id == fabrikam.id
    stranger = world.deliver(box, email(to=["someone@elsewhere.example"], sender="ops@other.example"))
    assert stranger.outcome == "unprocessed"


def test_attachment_condition_and_the_fallback(world, routed):
    box, msp, _c, fabrikam = routed
    invoice = world.deliver(box, email(to=["desk@acme.example"], attachments=[("inv.PDF", "application/pdf", b"%PDF")]))
    plain = world.deliver(box, email(to=["desk@acme.example"], subject="hello"))
    assert invoice.ticket.client_id == fabrikam.id
    assert plain.ticket.client_id == msp.id and "fallback route" in " ".join(plain.trace)
    assert invoice.message.attachments[0].filename == "inv.PDF"


def test_mail_to_an_alias_no_route_names_is_unprocessed(world, routed):
    box = routed[0]
    result = world.deliver(box, email(to=["old@acme.example"]))
    assert result.outcome == "unprocessed" and "alias no route names" in result.trace[-1]


# --- robustness ---------------------------------------------------------------------------------------


def test_broken_mail_is_kept_and_decided_not_dropped(world, acme):
    support = acme[3]
    garbage = b"\x00\xff\xfeNot an email at all\r\n\r\n\x89PNG"
    result = world.deliver(support, garbage)
    assert result.outcome in ("created", "unprocessed")
    assert result.message.raw_message.raw == garbage


def test_a_failing_message_does_not_stop_the_batch_and_ends_unprocessed(world, app, db, acme, monkeypatch):
    from portal.inbound import batch, decide, fetch
    from portal.services import commit

    support = acme[3]
    bad = fetch.store_raw(support, email(subject="poison"), server_id="1", folder="INBOX")
    good = fetch.store_raw(support, email(subject="fine"), server_id="2", folder="INBOX")
    commit()
    real = decide.decide

    def flaky(stored, ctx):
        if stored.id == bad.id:
            raise RuntimeError("database hiccup")
        return real(stored, ctx)

    monkeypatch.setattr(batch, "decide", flaky)
    secret = app.config["SECRET_KEY"].encode()
    for _ in range(3):
        fetch.decide_pending(support, secret, commit)
    db.session.refresh(bad)
    assert bad.state == "failed" and bad.tries == 3 and "database hiccup" in bad.last_error
    assert [t.subject for t in tickets()] == ["fine"]
    shown = db.session.scalar(select(Message).where(Message.raw_message_id == bad.id))
    assert shown.outcome == "unprocessed" and "database hiccup" in shown.trace[0]
    assert good.state == "decided"


def test_batches_read_ahead_thread_replies_across_batches_and_keep_failures_apart(world, app, db, acme, monkeypatch):
    """decide_pending reads the next batch in a thread while it decides this one: a reply in
    a later batch still finds its ticket, a message that fails (deciding or reading) is retried
    on its own, and every other message is decided exactly once."""
    from portal.inbound import batch, decide, fetch, read
    from portal.services import commit

    support = acme[3]
    kept = []
    for i in range(7):
        reply = i in (3, 6)
        mid = "<first@contoso.com>" if i == 0 else f"<m{i}@contoso.com>"
        raw_bytes = email(subject="Re: printer" if reply else f"new {i}", message_id=mid,
                          in_reply_to="<first@contoso.com>" if reply else None,
                          sender="alice@contoso.com")
        kept.append(fetch.store_raw(support, raw_bytes, server_id=str(i + 1), folder="INBOX"))
    commit()
    poison_decide = kept[4].id  # kept[5] fails while being read (its subject is "new 5")
    real_decide, real_examine = decide.decide, read.examine

    def flaky_decide(stored, ctx, item=None):
        if stored.id == poison_decide:
            raise RuntimeError("database hiccup")
        return real_decide(stored, ctx, item)

    def flaky_examine(setup, raw_bytes):
        if b"new 5" in (raw_bytes or b""):
            raise ValueError("cannot read this one")
        return real_examine(setup, raw_bytes)

    monkeypatch.setattr(batch, "decide", flaky_decide)
    # Read ahead in the Decider's thread (read.examine_all), and read again by the batch (read.prepare).
    monkeypatch.setattr(read, "examine", flaky_examine)
    report = fetch.decide_pending(support, app.config["SECRET_KEY"].encode(), commit, batch=2)

    assert report.decided == 5 and report.failed == 2
    states = {r.id: r.state for r in db.session.scalars(select(RawMessage).order_by(RawMessage.id))}
    assert [states[r.id] for r in kept] == ["decided"] * 4 + ["new", "new", "decided"]
    first = db.session.scalar(select(Message).where(Message.raw_message_id == kept[0].id)).ticket
    for i in (3, 6):
        reply = db.session.scalar(select(Message).where(Message.raw_message_id == kept[i].id))
        assert reply.outcome == "appended" and reply.ticket_id == first.id
    assert db.session.scalar(select(func.count(Message.id)).where(Message.raw_message_id.is_not(None))) == 5


def test_reprocessing_mail_on_a_ticket_keeps_it_there(world, app, acme):
    from portal.inbound.replay import Pipeline, context_for, replay
    from portal.services import commit

    support = acme[3]
    first = world.deliver(support, email(body="Help.\n\nBest regards\nAlice"))
    first.message.body_text = "garbled"
    commit()
    stored = first.message.raw_message
    again = replay(stored, context_for(stored, Pipeline(app.config["SECRET_KEY"].encode())))
    commit()
    assert again.message.id == first.message.id and again.ticket.id == first.ticket.id
    assert again.message.body_text.strip() == "Help."
    assert "re-processed" in again.trace[-1]
    assert len(tickets()) == 1


def test_reprocessing_unprocessed_mail_after_teaching_the_allow_list_creates_the_ticket(world, app, acme):
    from portal.inbound.replay import Pipeline, context_for, replay
    from portal.services import commit

    msp, contoso, _f, _s = acme
    box = world.mailbox(msp, address="desk@acme.example", routes=[
        {"name": "Contoso only", "client": contoso, "recipients": ["*"], "senders": ["contoso.com"]},
        {"name": "Fallback", "client": msp, "fallback": True}])
    waiting = world.deliver(box, email(to=["it@newcustomer.example"], sender="it@newcustomer.example"))
    assert waiting.outcome == "unprocessed"
    from portal.services.mailboxes import save_mailbox
    from portal.services.routes import RouteInput
    save_mailbox(msp, msp, {}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None, mailbox=box, routes=[
        RouteInput(name="Contoso only", client=contoso, recipients=["*"], senders=["contoso.com", "newcustomer.example"]),
        RouteInput(name="Fallback", client=msp, fallback=True)])
    commit()
    stored = waiting.message.raw_message
    again = replay(stored, context_for(stored, Pipeline(app.config["SECRET_KEY"].encode())))
    commit()
    assert again.outcome == "created" and again.ticket.client_id == contoso.id
