"""Which conversation of a ticket new mail threads on (pure: no database)."""

from portal.mail.threads import CUSTOMER, STAFF, Mail, split_conversations, thread_headers

C1 = Mail("<c1@customer>", "in", references=("<r0@customer>",))
ACK = Mail("<ack@us>", "out", "ticket_created", "<c1@customer>", ("<r0@customer>", "<c1@customer>"))
ALERT = Mail("<alert@us>", "out", "alert")
ONCALL = Mail("<s1@us>", "in", in_reply_to="<alert@us>", references=("<alert@us>",))
ONCALL_2 = Mail("<s2@us>", "in", in_reply_to="<s1@us>")  # answers the on-call answer only
REPLY = Mail("<reply@us>", "out", "reply", "<c1@customer>", ("<r0@customer>", "<c1@customer>"))


def test_the_ticket_splits_into_the_customers_conversation_and_the_staffs():
    sides = split_conversations([C1, ACK, ALERT, ONCALL, ONCALL_2, REPLY])
    assert sides[CUSTOMER] == [C1, ACK, REPLY]
    assert sides[STAFF] == [ALERT, ONCALL, ONCALL_2]


def test_customer_mail_answers_their_newest_mail_not_ours_nor_the_alert():
    assert thread_headers([C1, ACK, ALERT, REPLY]) == ("<c1@customer>", ["<r0@customer>", "<c1@customer>"])
    c2 = Mail("<c2@customer>", "in", in_reply_to="<reply@us>", references=("<r0@customer>", "<c1@customer>", "<reply@us>"))
    assert thread_headers([C1, ACK, ALERT, REPLY, c2, ONCALL]) == (
        "<c2@customer>", ["<r0@customer>", "<c1@customer>", "<reply@us>", "<c2@customer>"])


def test_an_id_of_the_other_conversation_never_reaches_the_references():
    # A reply sent before this rule threaded on the alert; the customer's answer carries its References.
    old_reply = Mail("<reply@us>", "out", "reply", "<alert@us>", ("<alert@us>",))
    answer = Mail("<c2@customer>", "in", in_reply_to="<reply@us>", references=("<alert@us>", "<reply@us>"))
    assert split_conversations([C1, ALERT, old_reply, answer])[CUSTOMER] == [C1, old_reply, answer]
    assert thread_headers([C1, ALERT, old_reply, answer]) == ("<c2@customer>", ["<reply@us>", "<c2@customer>"])
    # Without In-Reply-To, the nearest known reference decides.
    forwarded = Mail("<c4@customer>", "in", references=("<c1@customer>", "<s1@us>", "<unknown@elsewhere>"))
    assert split_conversations([C1, ALERT, ONCALL, forwarded])[STAFF][-1] == forwarded


def test_alerts_thread_among_themselves():
    assert thread_headers([C1, ACK], STAFF) == (None, [])  # the first alert starts its thread
    assert thread_headers([C1, ACK, ALERT, REPLY], STAFF) == ("<alert@us>", ["<alert@us>"])
    assert thread_headers([C1, ALERT, ONCALL, REPLY], STAFF) == ("<s1@us>", ["<alert@us>", "<s1@us>"])


def test_without_mail_from_the_customer_we_thread_on_what_we_sent_them():
    closed = Mail("<closed@us>", "out", "closed", "<x@us>", ("<x@us>",))
    assert thread_headers([ALERT, closed]) == ("<closed@us>", ["<x@us>", "<closed@us>"])
    assert thread_headers([]) == (None, [])
