"""Everything a customer receives from us, by concern. Flush, never commit.

- outbox: put mail in the outbox (queue_mail, notify_contact) and ask for the sender job, the
  one way it is asked for (ask_for_send).
- deliver: the sending run's work on each message: what is due, the loop guards on automatic
  mail, render, compose, send, and what happened.
- servers: which SMTP server sends (a mailbox's own, else its MSP's gateway, else the
  installation's), the one place
  SMTP settings are built from a stored server, and editing the servers.
- templates: which template applies (nearest ancestor wins), editing them, and their test send.
- test_mail: every "send test email", limited and audited.
- settings: the mail settings: the installation's defaults, each MSP's own values, each client's
  customer notifications, and which of them is in effect for a mail.
"""
