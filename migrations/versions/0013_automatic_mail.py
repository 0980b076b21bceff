"""What a mailbox does with automatic mail that threads to no ticket

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 23:45:00

`mailboxes.automatic_mail`: "record" (an auto-reply or out-of-office that answers no ticket waits
among the unprocessed mail; no ticket, no alert) or "ticket" (routed like any other mail, which is
what every mailbox did before). Existing mailboxes get "record", as new ones do. Downgrade drops it:
automatic mail opens tickets again.
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('automatic_mail', sa.String(length=10), server_default='record',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('automatic_mail')
