"""The settings issue #17 adds to mailboxes, routes, outgoing servers and MSPs

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 03:15:00

- `mailboxes.reply_to`: the Reply-To of our mail when it should differ from From.
- `mailboxes.accept_only_allowed`: mail from senders no allow-list or contact knows is kept and
  recorded as ignored (default off: every sender is taken, as before).
- `mailboxes.max_message_size`: the largest email fetched, in bytes (NULL: the installation's 40 MB).
- `mailboxes.embed_images`: "cid" (images as related parts, as before) or "inline" (base64 data URLs).
- `routes.test_mode`, `routes.test_hits`: a route in test records what it would have done, and how
  often, without doing it.
- `smtp_servers.last_test_*`: the last connection test of an outgoing server, as mailboxes keep theirs.
- `clients.retention_raw_days`, `clients.retention_unprocessed_days` (read on an MSP root): purge the
  raw mail of closed tickets and discarded unprocessed mail after so many days (NULL: never).
Downgrade drops them all: the behaviour falls back to what it was before.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reply_to', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('accept_only_allowed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('max_message_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('embed_images', sa.String(length=10), server_default='cid', nullable=False))
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test_mode', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('test_hits', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_test_at', portal.models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_test_ok', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('last_test_message', sa.Text(), nullable=True))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_raw_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('retention_unprocessed_days', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('retention_unprocessed_days')
        batch_op.drop_column('retention_raw_days')
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.drop_column('last_test_message')
        batch_op.drop_column('last_test_ok')
        batch_op.drop_column('last_test_at')
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('test_hits')
        batch_op.drop_column('test_mode')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('embed_images')
        batch_op.drop_column('max_message_size')
        batch_op.drop_column('accept_only_allowed')
        batch_op.drop_column('reply_to')
