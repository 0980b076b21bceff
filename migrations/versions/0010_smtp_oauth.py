"""A mailbox's own outgoing server signs in with a password or with the mailbox's OAuth2 grant

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:30:00

`smtp_servers.auth`: "password" (what every existing server does) or "oauth2" (AUTH XOAUTH2 with
the access token of the mailbox the server belongs to). Downgrade drops it: a server that signed
in with the grant is left with no login, and is printed.
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth', sa.String(length=10), server_default='password', nullable=False))


def downgrade():
    conn = op.get_bind()
    servers = sa.table('smtp_servers', sa.column('id', sa.Integer), sa.column('host', sa.String),
                       sa.column('mailbox_id', sa.Integer), sa.column('auth', sa.String))
    for id_, host, mailbox_id in conn.execute(sa.select(servers.c.id, servers.c.host, servers.c.mailbox_id)
                                              .where(servers.c.auth == 'oauth2')).all():
        print(f"Outgoing server {id_} ({host}) of mailbox {mailbox_id} signed in with OAuth2, which this "
              "version cannot: it now sends without a login.")
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.drop_column('auth')
