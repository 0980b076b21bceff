"""Inbound mail: from a mailbox to tickets (DESIGN's inbound pipeline), one module per part.

- fetch: one poll of a mailbox (IMAP, POP3): batches downloaded, stored and committed before the
  server is told, handed to the Decider, which reads ahead and decides them in order.
- batch: a stored batch decided in a savepoint, or each message alone when the batch fails.
- read: step 2, one message read without the database (parse, classify, fingerprint, refs).
- context: what deciding a mailbox's mail needs: its configuration, the ticket counter.
- lookups: a batch's lookups in a few queries, and what the batch has decided so far.
- decide: steps 2–10 for one message, in DESIGN's order; tickets: steps 6–7 and 9–10.
- extract: step 9's extraction rules of the route that made the ticket (portal.mail.extract reads).
- write: a decided batch written in a few statements instead of the ORM's flush.
- replay: stored mail decided again (command line, unprocessed pages), the routing check.
- unprocessed: the queue of mail a person places, teaches or discards.
- health: when a mailbox is fetched, stalled mailboxes, failure streaks and their alerts.

Raw mail: a `RawMessage` row is called `stored`; its bytes (`stored.raw`) are `raw_bytes`.
"""
