"""Service levels: SLA policies per MSP, chosen per client or set by a mailbox or route, and the
clocks of each ticket

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 06:20:00

- `sla_policies`: an MSP's policy: business hours per weekday and holidays in a time zone, and per
  priority a first-response and a resolution target in business minutes; the share of a target at
  which a warning goes out.
- `clients.sla_policy_id` (NULL: inherited), `mailboxes.sla_policy_id`, `routes.sla_policy_id`
  (NULL: the client's): which policy a ticket gets.
- `tickets.sla_*`: the ticket's policy, when its clock started (the server's receive time of the
  first mail), the two due times, when the first public reply and the resolution happened, when
  the clock was paused (waiting on the customer) and for how many business minutes in all, and which warnings and breaches were sent.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sla_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('business_hours', sa.JSON(), nullable=False),
    sa.Column('holidays', sa.JSON(), nullable=False),
    sa.Column('targets', sa.JSON(), nullable=False),
    sa.Column('warning_percent', sa.Integer(), server_default='80', nullable=False),
    sa.Column('updated_at', portal.models.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_sla_policies_msp_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_policies')),
    sa.UniqueConstraint('msp_id', 'name', name=op.f('uq_sla_policies_msp_id_name'))
    )
    for table in ('clients', 'mailboxes', 'routes'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('sla_policy_id', sa.Integer(), nullable=True))
            batch_op.create_foreign_key(batch_op.f(f'fk_{table}_sla_policy_id_sla_policies'), 'sla_policies',
                                        ['sla_policy_id'], ['id'], ondelete='SET NULL')
    triggers = _ticket_triggers()
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sla_policy_id', sa.Integer(), nullable=True))
        for column in ('sla_started_at', 'first_response_due_at', 'resolution_due_at', 'first_response_at',
                       'resolved_at', 'sla_paused_at'):
            batch_op.add_column(sa.Column(column, portal.models.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('sla_paused_minutes', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('sla_sent', sa.JSON(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_tickets_sla_policy_id_sla_policies'), 'sla_policies',
                                    ['sla_policy_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_tickets_msp_id_first_response_due_at', ['msp_id', 'first_response_due_at'])
        batch_op.create_index('ix_tickets_msp_id_resolution_due_at', ['msp_id', 'resolution_due_at'])
    _make_again(triggers)


def _ticket_triggers() -> list[str]:
    """On SQLite, a foreign key on an existing table needs batch mode, which copies the table into
    a new one and so loses its triggers (the search index's, migration 0005): read them first."""
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return []
    return [row[0] for row in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tickets'")]


def _make_again(triggers: list[str]) -> None:
    for sql in triggers:
        op.get_bind().exec_driver_sql(sql)

def downgrade():
    triggers = _ticket_triggers()
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_msp_id_resolution_due_at')
        batch_op.drop_index('ix_tickets_msp_id_first_response_due_at')
        batch_op.drop_constraint('fk_tickets_sla_policy_id_sla_policies', type_='foreignkey')
        for column in ('sla_sent', 'sla_paused_minutes', 'sla_paused_at', 'resolved_at', 'first_response_at',
                       'resolution_due_at', 'first_response_due_at', 'sla_started_at', 'sla_policy_id'):
            batch_op.drop_column(column)
    _make_again(triggers)
    for table in ('routes', 'mailboxes', 'clients'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_sla_policy_id_sla_policies', type_='foreignkey')
            batch_op.drop_column('sla_policy_id')
    op.drop_table('sla_policies')
