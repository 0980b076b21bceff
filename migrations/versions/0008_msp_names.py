"""MSP names unique across the installation; addresses no longer unique where that told one MSP about another

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06 04:00:00

`clients.name_key` holds an MSP root's name casefolded with its spaces collapsed, under a
unique index (sub-clients leave it empty). Existing MSPs whose names are the same in that
sense are not refused: the oldest keeps its name, each later one is renamed with a suffix
(" (2)", " (3)", ...), and the new name is printed. Downgrade drops the column; the new names stay.

Users: an email is unique within an MSP instead of across the installation, so that inviting an
address that has an account in another MSP is answered like any invitation. Mailboxes: the
address is indexed, not unique; only an active mailbox whose last test succeeded claims it.
Downgrade restores both unique constraints and fails if rows now share an address.
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.String(length=600), nullable=True))
    conn = op.get_bind()
    clients = sa.table('clients', sa.column('id', sa.Integer), sa.column('name', sa.String),
                       sa.column('name_key', sa.String), sa.column('parent_id', sa.Integer))
    roots = conn.execute(sa.select(clients.c.id, clients.c.name).where(clients.c.parent_id.is_(None))
                         .order_by(clients.c.id)).all()
    taken: set[str] = set()
    for id_, name in roots:
        base = " ".join(name.split())
        new, n = base, 1
        while _key(new) in taken:
            n += 1
            new = f"{base[:190]} ({n})"
        taken.add(_key(new))
        values = {"name_key": _key(new)}
        if new != base:
            values["name"] = new
            print(f"MSP {id_}: {name!r} is renamed {new!r}, since another MSP has that name.")
        conn.execute(sa.update(clients).where(clients.c.id == id_).values(**values))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clients_name_key'), ['name_key'], unique=True)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_email', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_users_msp_id_email'), ['msp_id', 'email'])
        batch_op.create_index(batch_op.f('ix_users_email'), ['email'], unique=False)
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_constraint('uq_mailboxes_address', type_='unique')
        batch_op.create_index(batch_op.f('ix_mailboxes_address'), ['address'], unique=False)


def downgrade():
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mailboxes_address'))
        batch_op.create_unique_constraint('uq_mailboxes_address', ['address'])
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_email'))
        batch_op.drop_constraint(batch_op.f('uq_users_msp_id_email'), type_='unique')
        batch_op.create_unique_constraint('uq_users_email', ['email'])
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clients_name_key'))
        batch_op.drop_column('name_key')
