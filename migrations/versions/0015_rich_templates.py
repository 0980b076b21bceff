"""One rich-text body per email template, and a layout per MSP that it is sent in

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:30:00

`email_templates` gains `subject` and `body` (the simple editor's template; when body is set both
parts are made from it); `email_layouts` holds an MSP's CSS, header and footer. Downgrade cannot
keep a rich-text template (the older code reads only the raw sources): such templates are deleted,
and their clients fall back to the inherited or built-in template.
"""
from alembic import op
import sqlalchemy as sa

import portal.models.base  # noqa: F401 - custom column types

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('email_templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('body', sa.Text(), nullable=True))
    op.create_table(
        'email_layouts',
        sa.Column('msp_id', sa.Integer(), nullable=False),
        sa.Column('css', sa.Text(), nullable=False),
        sa.Column('header', sa.Text(), nullable=False),
        sa.Column('footer', sa.Text(), nullable=False),
        sa.Column('updated_at', portal.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['msp_id'], ['clients.id'], name=op.f('fk_email_layouts_msp_id_clients'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('msp_id', name=op.f('pk_email_layouts')),
    )


def downgrade():
    op.drop_table('email_layouts')
    op.execute("DELETE FROM email_templates WHERE body IS NOT NULL")
    with op.batch_alter_table('email_templates', schema=None) as batch_op:
        batch_op.drop_column('body')
        batch_op.drop_column('subject')
