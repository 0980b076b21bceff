"""Each MSP its own mail settings; client language; acknowledgement templates per mailbox or route

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 06:00:00

- `msp_settings`: an MSP's own value of an installation mail setting (block outgoing, override
  recipient, automatic-mail limit, customer notifications); no row: the installation's value.
- `smtp_servers.msp_id`: an MSP's own default gateway (no mailbox, an MSP); the installation's
  gateway has neither.
- `clients.language`: the language of a client's customer-facing mail (NULL: inherited).
- `clients.customer_notifications`: a client's own choice of customer notifications (NULL: inherited).
- `email_templates.variant`: alternatives of one event's template ("" is the standard one); the
  unique key becomes (client, event, variant).
- `mailboxes.acknowledgement_variant`, `routes.acknowledgement_variant`: which alternative of the
  client's acknowledgement their new tickets get (NULL: the standard one; a route's wins).
Downgrade drops them (alternatives other than the standard one are deleted first).
"""
from alembic import op
import sqlalchemy as sa

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('msp_settings',
    sa.Column('msp_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_msp_settings_msp_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('msp_id', 'key', name=op.f('pk_msp_settings'))
    )
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('msp_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_smtp_servers_msp_id'), ['msp_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_smtp_servers_msp_id_clients'), 'clients', ['msp_id'], ['id'],
                                    ondelete='CASCADE')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('customer_notifications', sa.JSON(), nullable=True))
    with op.batch_alter_table('email_templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('variant', sa.String(length=40), server_default='', nullable=False))
        batch_op.drop_constraint('uq_email_templates_client_id_event', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_email_templates_client_id_event_variant'),
                                          ['client_id', 'event', 'variant'])
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acknowledgement_variant', sa.String(length=40), nullable=True))
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acknowledgement_variant', sa.String(length=40), nullable=True))


def downgrade():
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('acknowledgement_variant')
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('acknowledgement_variant')
    op.execute("DELETE FROM email_templates WHERE variant <> ''")
    with op.batch_alter_table('email_templates', schema=None) as batch_op:
        batch_op.drop_constraint('uq_email_templates_client_id_event_variant', type_='unique')
        batch_op.create_unique_constraint('uq_email_templates_client_id_event', ['client_id', 'event'])
        batch_op.drop_column('variant')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('customer_notifications')
        batch_op.drop_column('language')
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.drop_constraint('fk_smtp_servers_msp_id_clients', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_smtp_servers_msp_id'))
        batch_op.drop_column('msp_id')
    op.drop_table('msp_settings')
