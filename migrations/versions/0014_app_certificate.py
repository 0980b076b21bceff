"""A certificate instead of a client secret for an MSP's Microsoft 365 app and a mailbox's own app

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 23:40:00

`msp_microsoft_apps` and `mailbox_oauth` gain the certificate's PEM (private key and certificate, encrypted like the
secret), its SHA-1 thumbprint and its notAfter. Downgrade drops them: an app that signed in with a
certificate alone then has no credential until a secret is entered.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


TABLES = ('msp_microsoft_apps', 'mailbox_oauth')


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('certificate_encrypted', sa.LargeBinary(), nullable=True))
            batch_op.add_column(sa.Column('certificate_thumbprint', sa.String(length=40), nullable=True))
            batch_op.add_column(sa.Column('certificate_expires', portal.models.base.UTCDateTime(), nullable=True))


def downgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('certificate_expires')
            batch_op.drop_column('certificate_thumbprint')
            batch_op.drop_column('certificate_encrypted')
