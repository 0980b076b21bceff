"""Mailboxes sign in with a password or OAuth2, and speak IMAP, POP3 or Microsoft Graph

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:00:00

`mailboxes.auth` ("password", what every existing mailbox does, or "oauth2") and
`mailboxes.api_url` (Graph's root; Graph has no host or port). `mailbox_oauth` holds, one row per
mailbox that has them, the OAuth2 app settings and the grant (encrypted tokens, the connected
account, its state). Downgrade drops them all: grants and client secrets are lost, and a Graph
mailbox (which the older code cannot reach) is disabled and printed.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth', sa.String(length=10), server_default='password', nullable=False))
        batch_op.add_column(sa.Column('api_url', sa.String(length=2000), nullable=True))
    op.create_table('mailbox_oauth',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('flow', sa.String(length=20), nullable=False),
    sa.Column('tenant', sa.String(length=255), nullable=True),
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('client_secret_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('secret_expires', sa.Date(), nullable=True),
    sa.Column('token_url', sa.String(length=2000), nullable=True),
    sa.Column('authorize_url', sa.String(length=2000), nullable=True),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_reason', sa.Text(), nullable=True),
    sa.Column('state_changed_at', portal.models.base.UTCDateTime(), nullable=True),
    sa.Column('account', sa.String(length=320), nullable=True),
    sa.Column('refresh_token_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('access_token_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('access_token_expires_at', portal.models.base.UTCDateTime(), nullable=True),
    sa.Column('grant_expires_at', portal.models.base.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_mailbox_oauth_mailbox_id_mailboxes'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mailbox_oauth')),
    sa.UniqueConstraint('mailbox_id', name=op.f('uq_mailbox_oauth_mailbox_id'))
    )


def downgrade():
    conn = op.get_bind()
    mailboxes = sa.table('mailboxes', sa.column('id', sa.Integer), sa.column('address', sa.String),
                         sa.column('protocol', sa.String), sa.column('status', sa.String))
    for id_, address in conn.execute(sa.select(mailboxes.c.id, mailboxes.c.address)
                                     .where(mailboxes.c.protocol == 'graph')).all():
        print(f"Mailbox {id_} ({address}) speaks Microsoft Graph, which this version cannot: it is disabled.")
    conn.execute(sa.update(mailboxes).where(mailboxes.c.protocol == 'graph').values(status='disabled'))
    op.drop_table('mailbox_oauth')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('api_url')
        batch_op.drop_column('auth')
