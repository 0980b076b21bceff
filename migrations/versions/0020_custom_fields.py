"""Custom ticket fields per MSP, their values on tickets, routes' extraction rules and the MSP's
ticket-type allow-list

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 06:00:00

- `custom_fields`: an MSP's field: name (unique in the MSP), kind (text, number, choice, date),
  the choices of a choice field, its position on the ticket page.
- `ticket_field_values`: one value per ticket and field, as text (numbers and dates normalised),
  indexed by MSP, field and value for the ticket list's filter.
- `routes.extraction_rules`: JSON list of {source, pattern, target}.
- `clients.ticket_types`: on an MSP root, the ticket types its tickets may have (NULL or empty: any).
"""
from alembic import op
import sqlalchemy as sa

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('custom_fields',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('choices', sa.JSON(), nullable=False),
    sa.Column('position', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_custom_fields_msp_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custom_fields')),
    sa.UniqueConstraint('msp_id', 'name', name=op.f('uq_custom_fields_msp_id_name'))
    )
    op.create_table('ticket_field_values',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('field_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_ticket_field_values_msp_id_clients')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_ticket_field_values_ticket_id_tickets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['field_id'], ['custom_fields.id'], name=op.f('fk_ticket_field_values_field_id_custom_fields'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_field_values')),
    sa.UniqueConstraint('ticket_id', 'field_id', name=op.f('uq_ticket_field_values_ticket_id_field_id'))
    )
    op.create_index('ix_ticket_field_values_msp_field_value', 'ticket_field_values', ['msp_id', 'field_id', 'value'])
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('extraction_rules', sa.JSON(), nullable=True))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ticket_types', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('ticket_types')
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('extraction_rules')
    op.drop_index('ix_ticket_field_values_msp_field_value', table_name='ticket_field_values')
    op.drop_table('ticket_field_values')
    op.drop_table('custom_fields')
