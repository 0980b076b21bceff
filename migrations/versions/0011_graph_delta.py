"""Graph mailboxes remember where each folder's last delta round ended

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:00:00

`folder_states.delta_link`: the `@odata.deltaLink` Microsoft Graph gave at the end of the last
fetch of a folder (IMAP folders leave it empty). Stored only once that fetch's mail is committed.
Downgrade drops it: a Graph mailbox then reads its folders from the start again, and the stored
mail's unique rows keep anything from being stored twice.
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('folder_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delta_link', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('folder_states', schema=None) as batch_op:
        batch_op.drop_column('delta_link')
