"""Graph change-notification subscriptions

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 11:30:00

- `graph_subscriptions`: per Graph mailbox and folder, the subscription Graph gave us (its id,
  when it expires), the clientState secret Graph echoes in every notification (Fernet, like
  passwords), and, when there is none, why (portal.inbound.graph_push).
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'graph_subscriptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('mailbox_id', sa.Integer(), nullable=False),
        sa.Column('folder', sa.String(length=255), nullable=False),
        sa.Column('subscription_id', sa.String(length=255), nullable=True),
        sa.Column('expires_at', portal.models.base.UTCDateTime(), nullable=True),
        sa.Column('client_state_encrypted', sa.LargeBinary(), nullable=True),
        sa.Column('problem', sa.Text(), nullable=True),
        sa.Column('changed_at', portal.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('mailbox_id', 'folder'),
        sa.UniqueConstraint('subscription_id'),
    )
    op.create_index('ix_graph_subscriptions_mailbox_id', 'graph_subscriptions', ['mailbox_id'])


def downgrade():
    op.drop_index('ix_graph_subscriptions_mailbox_id', table_name='graph_subscriptions')
    op.drop_table('graph_subscriptions')
