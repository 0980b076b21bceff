"""The outbox found by an index

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 21:00:00

Every sending run looks for the mail waiting in the outbox (queued, retrying) and, from now on,
for mail a run before it was handing to its server when it stopped ("sending"). Without an index
on delivery each look walked the whole messages table: 89 ms on PostgreSQL at 3,000,000 messages,
116 ms on SQLite in memory, after every fetch and every 30 s. A partial index of the outbound
messages (inbound mail and notes have no delivery) answers both in well under a millisecond.
"""
from alembic import op
import sqlalchemy as sa


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade():
    # A plain CREATE INDEX, not batch mode (which would drop the SQLite search triggers of 0005).
    op.create_index('ix_messages_outbox', 'messages', ['delivery', 'id'],
                    postgresql_where=sa.text('delivery IS NOT NULL'), sqlite_where=sa.text('delivery IS NOT NULL'))


def downgrade():
    op.drop_index('ix_messages_outbox', table_name='messages')
