"""Alert rules: one ticket per open monitoring problem

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 06:00:00

- `routes.alert_rule` (JSON, NULL: none): how the route reads a problem key and a state from
  monitoring mail (portal.mail.alerts).
- `tickets.alert_*`: the key of the problem a ticket stands for (indexed with msp_id: the pipeline
  looks up the open ticket of a key), its last state, how many alert mails came and when the first
  and the last came, whether it is flapping, and the times of its recent state changes.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN, not batch mode: on SQLite a batch would copy the tickets table into a new
    # one, which drops the search triggers that migration 0005 put on it.
    op.add_column('routes', sa.Column('alert_rule', sa.JSON(), nullable=True))
    op.add_column('tickets', sa.Column('alert_key', sa.String(length=300), nullable=True))
    op.add_column('tickets', sa.Column('alert_state', sa.String(length=10), nullable=True))
    op.add_column('tickets', sa.Column('alert_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('tickets', sa.Column('alert_first_at', portal.models.base.UTCDateTime(), nullable=True))
    op.add_column('tickets', sa.Column('alert_last_at', portal.models.base.UTCDateTime(), nullable=True))
    op.add_column('tickets', sa.Column('alert_flapping', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('tickets', sa.Column('alert_changes', sa.JSON(), nullable=True))
    op.create_index('ix_tickets_msp_alert_key', 'tickets', ['msp_id', 'alert_key'])


def downgrade():
    # Dropping columns on SQLite copies the table (batch mode), which loses its search triggers:
    # they are read first and made again after.
    bind = op.get_bind()
    triggers = [row[0] for row in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tickets'")] \
        if bind.dialect.name == 'sqlite' else []
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_msp_alert_key')
        for column in ('alert_changes', 'alert_flapping', 'alert_last_at', 'alert_first_at', 'alert_count',
                       'alert_state', 'alert_key'):
            batch_op.drop_column(column)
    for sql in triggers:
        bind.exec_driver_sql(sql)
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('alert_rule')
