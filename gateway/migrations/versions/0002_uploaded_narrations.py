"""A narration uploaded with a job is named by an id the service made, never by a string the client
sent (`upload:<path>` in audio_url was read as a path); audio_name is what messages call it."""
import sqlalchemy as sa
from alembic import op

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("audio_upload", sa.Text))
    op.add_column("jobs", sa.Column("audio_name", sa.Text))
    op.execute("UPDATE jobs SET audio_upload = substr(audio_url, 8), audio_name = 'the uploaded narration', "
               "audio_url = '' WHERE audio_url LIKE 'upload:%'")
    op.execute("UPDATE jobs SET audio_name = audio_url WHERE audio_name IS NULL")
