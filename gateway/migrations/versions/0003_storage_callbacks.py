"""Object storage (where each video and ZIP was put) and the result callbacks' outbox."""
import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"


def upgrade() -> None:
    op.add_column("items", sa.Column("object_key", sa.Text))
    op.add_column("items", sa.Column("rendered", sa.Float))
    for name in ("archive_state", "archive_key", "archive_error"):
        op.add_column("jobs", sa.Column(name, sa.Text))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text, nullable=False), sa.Column("event", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False), sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created", sa.Float, nullable=False), sa.Column("next_attempt", sa.Float, nullable=False),
        sa.Column("last_attempt", sa.Float), sa.Column("last_status", sa.Integer), sa.Column("last_error", sa.Text),
        sa.Column("delivered", sa.Float), sa.Column("seq", sa.Integer, nullable=False))
    op.create_index("deliveries_due", "deliveries", ["status", "next_attempt"])
    op.create_index("deliveries_job", "deliveries", ["job_id", "seq"])
    op.create_table(
        "signing_secrets",
        sa.Column("tenant", sa.Text, primary_key=True), sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous", sa.Text), sa.Column("rotated", sa.Float), sa.Column("created", sa.Float, nullable=False))
    op.create_table(
        "object_removals",
        sa.Column("tenant", sa.Text, nullable=False), sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False), sa.PrimaryKeyConstraint("tenant", "job_id"))
