"""canned responses

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:00:00

"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('canned_responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('updated_at', portal.models.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_canned_responses_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_canned_responses_msp_id_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canned_responses')),
    sa.UniqueConstraint('client_id', 'name', name=op.f('uq_canned_responses_client_id_name'))
    )
    with op.batch_alter_table('canned_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canned_responses_msp_id'), ['msp_id'], unique=False)


def downgrade():
    with op.batch_alter_table('canned_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canned_responses_msp_id'))
    op.drop_table('canned_responses')
