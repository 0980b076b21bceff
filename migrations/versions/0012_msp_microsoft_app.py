"""An MSP's Microsoft 365 app, and the customer tenants that consented to it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 22:45:00

`msp_microsoft_apps`: one row per MSP that registered a multi-tenant app (client id, encrypted
client secret, the secret's expiry). `tenant_consents`: one row per client whose customer's
global admin granted that app in their tenant (the tenant id, the app consented, when).
Downgrade drops both: the secret is lost, and each customer's admin must consent again.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('msp_microsoft_apps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('client_secret_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('secret_expires', sa.Date(), nullable=True),
    sa.Column('updated_at', portal.models.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_msp_microsoft_apps_msp_id_clients'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_msp_microsoft_apps')),
    sa.UniqueConstraint('msp_id', name=op.f('uq_msp_microsoft_apps_msp_id'))
    )
    op.create_table('tenant_consents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=255), nullable=False),
    sa.Column('app_id', sa.String(length=255), nullable=False),
    sa.Column('consented_at', portal.models.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_tenant_consents_client_id_clients'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_tenant_consents_msp_id_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_consents')),
    sa.UniqueConstraint('client_id', name=op.f('uq_tenant_consents_client_id'))
    )
    with op.batch_alter_table('tenant_consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_consents_msp_id'), ['msp_id'], unique=False)


def downgrade():
    with op.batch_alter_table('tenant_consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_consents_msp_id'))
    op.drop_table('tenant_consents')
    op.drop_table('msp_microsoft_apps')
