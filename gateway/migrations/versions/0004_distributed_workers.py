"""Items rendered by workers on other machines: which claim of the item is current (`lease`: a
late answer from an earlier claim changes nothing), when its worker was last heard from
(`heartbeat`: silent too long, the item is run again), when its task was last sent to the
broker (`dispatched`), how often it was claimed (`attempts`) and by which worker process
(`worker`: host-pid, for the log and the operator)."""
import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"


def upgrade() -> None:
    op.add_column("items", sa.Column("lease", sa.Text))
    op.add_column("items", sa.Column("heartbeat", sa.Float))
    op.add_column("items", sa.Column("dispatched", sa.Float))
    op.add_column("items", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("items", sa.Column("worker", sa.Text))
    op.create_index("items_lease", "items", ["lease"])
