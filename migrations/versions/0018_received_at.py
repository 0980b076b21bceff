"""When the mail server received each email

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 06:10:00

- `raw_messages.received_at`: the server's receive time (IMAP INTERNALDATE, Graph
  receivedDateTime, the LMTP receipt), which service-level clocks and time to ticket start from;
  NULL where the server gives none (then the fetch time stands in).
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('raw_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('received_at', portal.models.base.UTCDateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('raw_messages', schema=None) as batch_op:
        batch_op.drop_column('received_at')
