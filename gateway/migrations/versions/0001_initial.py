"""The first schema: jobs, their items, revoked tokens, kept templates."""
import sqlalchemy as sa
from alembic import op

revision, down_revision = "0001", None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text, primary_key=True), sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False), sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float), sa.Column("finished", sa.Float),
        sa.Column("audio_url", sa.Text, nullable=False), sa.Column("callback_url", sa.Text),
        sa.Column("metadata", sa.Text), sa.Column("zip", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text), sa.Column("request_hash", sa.Text),
        sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
        sa.Column("seq", sa.Integer, nullable=False))
    op.create_index("jobs_idempotency", "jobs", ["tenant", "idempotency_key"], unique=True)
    op.create_index("jobs_tenant", "jobs", ["tenant", "seq"])
    op.create_table(
        "items",
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False), sa.Column("template", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False), sa.Column("error", sa.Text), sa.Column("output", sa.Text),
        sa.Column("stage", sa.Text), sa.Column("frames_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frames_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started", sa.Float), sa.Column("finished", sa.Float), sa.Column("seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "idx"))
    op.create_index("items_queue", "items", ["status", "seq", "idx"])
    op.create_table("revoked", sa.Column("jti", sa.Text, primary_key=True),
                    sa.Column("revoked", sa.Float, nullable=False))
    op.create_table(
        "templates",
        sa.Column("id", sa.Text, primary_key=True), sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False), sa.Column("path", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False), sa.Column("reason", sa.Text),
        sa.Column("width", sa.Integer), sa.Column("height", sa.Integer), sa.Column("fps", sa.Float),
        sa.Column("duration", sa.Float), sa.Column("faces", sa.Integer), sa.Column("thumbnail", sa.Text),
        sa.Column("created", sa.Float, nullable=False))
    op.create_index("templates_tenant", "templates", ["tenant", "created"])
