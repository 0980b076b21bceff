"""Everything a customer receives from us, by concern. Flush, never commit.

- outbox: put mail in the outbox (queue_mail, notify_contact) and ask for the sender job, the
  one way it is asked for (ask_for_send).
- deliver: the sending run's work on each message: what is due, the loop guards on automatic
  mail, render, compose, send, and what happened.
- servers: which SMTP server sends (a mailbox's own, else the default gateway), the one place
  SMTP settings are built from a stored server, and editing the servers.
- templates: which template applies (nearest ancestor wins), editing them, and their test send.
- test_mail: every "send test email", limited and audited.
- settings: the installation-wide switches and the mail settings page.
"""
