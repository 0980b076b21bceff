"""Routes in test (portal.mail.route): a matching route in test records what it would have done
and the next route decides, as if it had not matched."""

from portal.mail.route import MailFacts, RouteRule, choose_route, ticket_priority

BOX, ALIASES = "desk@msp.example", ("vip@msp.example", "new@msp.example")
FALLBACK = RouteRule(9, "Everything else", 1, fallback=True, client_name="MSP")


def facts(to=("vip@msp.example",), sender="ann@contoso.com", subject="help", priority="normal"):
    return MailFacts(sender=sender, recipients=tuple(to), subject=subject, priority=priority)


def test_a_matching_route_in_test_does_not_apply_and_the_next_route_does():
    trial = RouteRule(1, "New VIP", 2, ("vip@msp.example",), test_mode=True, client_name="Contoso",
                      default_priority="high")
    live = RouteRule(2, "VIP", 3, ("vip@msp.example",), client_name="Fabrikam")
    choice = choose_route([trial, live, FALLBACK], facts(), BOX, ALIASES)
    assert choice.rule is live and choice.client_id == 3
    assert choice.tested == [(trial, "filed this under Contoso with priority high")]
    assert choice.trace == ["route 'New VIP' (test) would have filed this under Contoso with priority high; "
                            "not applied, the next route decides"]


def test_a_wildcard_route_in_test_falls_through_to_the_fallback():
    trial = RouteRule(1, "Partner BCC", 2, ("*",), senders=("contoso.com",), test_mode=True, client_name="Contoso")
    choice = choose_route([trial, FALLBACK], facts(to=(BOX,)), BOX, ALIASES, mailbox_priority="low")
    assert choice.rule is FALLBACK
    assert [what for _, what in choice.tested] == ["filed this under Contoso with priority low"]


def test_bcc_mail_a_test_wildcard_route_would_take_stays_unprocessed():
    trial = RouteRule(1, "Partner BCC", 2, ("*",), senders=("contoso.com",), test_mode=True, client_name="Contoso")
    choice = choose_route([trial, FALLBACK], facts(to=("someone@else.example",)), BOX, ALIASES)
    assert choice.client_id is None and choice.tested and "only BCC'd" in choice.reason


def test_a_route_in_test_that_does_not_match_is_skipped_and_not_recorded():
    trial = RouteRule(1, "Invoices", 2, ("vip@msp.example",), subject_keywords=("invoice",), test_mode=True)
    choice = choose_route([trial, FALLBACK], facts(to=(BOX, "vip@msp.example")), BOX, ALIASES)
    assert choice.rule is FALLBACK and choice.tested == []
    assert choice.trace == ["route 'Invoices' (test) skipped: no subject keyword"]


def test_an_alias_only_a_test_route_names_is_still_an_alias_no_route_names():
    """The route in test changes nothing: without it, mail to the new alias waits unprocessed."""
    trial = RouteRule(1, "New alias", 2, ("new@msp.example",), test_mode=True, client_name="Contoso")
    choice = choose_route([trial, FALLBACK], facts(to=("new@msp.example",)), BOX, ALIASES)
    assert choice.client_id is None and "an alias no route names" in choice.reason
    assert len(choice.tested) == 1


def test_a_switched_off_route_in_test_records_nothing():
    trial = RouteRule(1, "New VIP", 2, ("vip@msp.example",), test_mode=True, enabled=False)
    choice = choose_route([trial, FALLBACK], facts(to=(BOX, "vip@msp.example")), BOX, ALIASES)
    assert choice.rule is FALLBACK and choice.tested == [] and choice.trace == []


def test_the_would_be_priority_is_the_ticket_priority():
    trial = RouteRule(1, "New VIP", 2, ("vip@msp.example",), test_mode=True, client_name="Contoso",
                      default_priority="low")
    choice = choose_route([trial, FALLBACK], facts(priority="high"), BOX, ALIASES)
    assert choice.tested[0][1].endswith("with priority high")
    assert ticket_priority("high", "low", "normal") == "high"
    assert ticket_priority("normal", "low", "normal") == "low"
    assert ticket_priority("normal", None, "urgent") == "urgent"
