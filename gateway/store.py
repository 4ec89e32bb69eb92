"""Durable job state in SQLite (WAL): one place where every job's and item's state is written
and read. An item's life: queued -> running -> succeeded | failed | canceled; a job's status is
derived from its items (plus `partial` when some failed and some succeeded)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, PARTIAL = "queued", "running", "succeeded", "failed", "canceled", "partial"
ITEM_DONE = (SUCCEEDED, FAILED, CANCELED)
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELED)
# A template kept by the service, named in a job's templates by its id.
TEMPLATE_ID_PREFIX = "tpl_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, audio_url TEXT NOT NULL, callback_url TEXT, metadata TEXT,
    zip INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT, request_hash TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant, idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, seq);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    template TEXT NOT NULL, status TEXT NOT NULL, error TEXT, output TEXT, stage TEXT,
    frames_done INTEGER NOT NULL DEFAULT 0, frames_total INTEGER NOT NULL DEFAULT 0,
    started REAL, finished REAL, seq INTEGER NOT NULL, PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS items_queue ON items (status, seq, idx);
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, revoked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, width INTEGER, height INTEGER, fps REAL, duration REAL,
    faces INTEGER, thumbnail TEXT, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_tenant ON templates (tenant, created);
"""
# Schema changes, in order; PRAGMA user_version counts those applied.
MIGRATIONS = [
    SCHEMA,
    # A narration uploaded with a job is named by an id the service made, never by a string the
    # client sent (`upload:<path>` in audio_url was read as a path); audio_name is what to call
    # it in messages (its file name, or the URL).
    """ALTER TABLE jobs ADD COLUMN audio_upload TEXT;
       ALTER TABLE jobs ADD COLUMN audio_name TEXT;
       UPDATE jobs SET audio_upload = substr(audio_url, 8), audio_name = 'the uploaded narration', audio_url = ''
        WHERE audio_url LIKE 'upload:%';
       UPDATE jobs SET audio_name = audio_url WHERE audio_name IS NULL;""",
]


@dataclass
class Item:
    job_id: str
    index: int
    template: str
    status: str
    error: str | None
    output: str | None
    stage: str | None
    frames_done: int
    frames_total: int
    started: float | None
    finished: float | None


@dataclass
class Job:
    id: str
    tenant: str
    status: str
    created: float
    started: float | None
    finished: float | None
    audio_url: str              # '' when the narration was uploaded with the job
    audio_upload: str | None    # the upload's id
    audio_name: str             # what messages call the narration
    callback_url: str | None
    metadata: dict | None
    zip: bool
    cancel_requested: bool
    seq: int
    items: list[Item]


@dataclass
class Template:
    id: str
    tenant: str
    name: str
    path: str
    status: str  # ready | rejected
    reason: str | None
    width: int | None
    height: int | None
    fps: float | None
    duration: float | None
    faces: int | None
    thumbnail: str | None
    created: float


class Conflict(Exception):
    """The idempotency key was used with another request body."""


class Store:
    def __init__(self, path: str):
        self.path = path
        self.local = threading.local()
        self.write_lock = threading.Lock()  # one writer at a time: no SQLITE_BUSY retries
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        with self.write_lock:
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self.local.db = db
        return db

    def _write(self, statements) -> None:
        with self.write_lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                statements(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # jobs -------------------------------------------------------------------------------------

    def create_job(self, tenant: str, audio_url: str, audio_upload: str | None, audio_name: str, templates: list[str],
                   callback_url: str | None, metadata: dict | None, zip_: bool, idempotency_key: str | None,
                   request_hash: str) -> tuple[Job, bool]:
        """(job, created): an idempotency key seen before with the same body returns that job."""
        result: dict = {}

        def insert(db: sqlite3.Connection) -> None:
            if idempotency_key:
                row = db.execute("SELECT id, request_hash FROM jobs WHERE tenant=? AND idempotency_key=?",
                                 (tenant, idempotency_key)).fetchone()
                if row:
                    if row["request_hash"] != request_hash:
                        raise Conflict(idempotency_key)
                    result["id"], result["created"] = row["id"], False
                    return
            job_id = uuid.uuid4().hex
            seq = (db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0])
            db.execute("INSERT INTO jobs (id, tenant, status, created, audio_url, audio_upload, audio_name, callback_url, "
                       "metadata, zip, idempotency_key, request_hash, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (job_id, tenant, QUEUED, time.time(), audio_url, audio_upload, audio_name, callback_url,
                        json.dumps(metadata) if metadata is not None else None, int(zip_), idempotency_key,
                        request_hash, seq))
            db.executemany("INSERT INTO items (job_id, idx, template, status, seq) VALUES (?,?,?,?,?)",
                           [(job_id, i, t, QUEUED, seq) for i, t in enumerate(templates)])
            result["id"], result["created"] = job_id, True

        self._write(insert)
        return self.job(result["id"]), result["created"]

    def job(self, job_id: str, tenant: str | None = None) -> Job | None:
        db = self._db()
        query, args = "SELECT * FROM jobs WHERE id=?", [job_id]
        if tenant is not None:
            query, args = query + " AND tenant=?", args + [tenant]
        row = db.execute(query, args).fetchone()
        if row is None:
            return None
        items = [Item(r["job_id"], r["idx"], r["template"], r["status"], r["error"], r["output"], r["stage"],
                      r["frames_done"], r["frames_total"], r["started"], r["finished"])
                 for r in db.execute("SELECT * FROM items WHERE job_id=? ORDER BY idx", (job_id,))]
        return Job(row["id"], row["tenant"], row["status"], row["created"], row["started"], row["finished"],
                   row["audio_url"], row["audio_upload"], row["audio_name"], row["callback_url"], json.loads(row["metadata"]) if row["metadata"] else None,
                   bool(row["zip"]), bool(row["cancel_requested"]), row["seq"], items)

    def jobs(self, tenant: str, status: str | None, limit: int, before_seq: int | None) -> list[Job]:
        query, args = "SELECT id FROM jobs WHERE tenant=?", [tenant]
        if status:
            query, args = query + " AND status=?", args + [status]
        if before_seq is not None:
            query, args = query + " AND seq<?", args + [before_seq]
        rows = self._db().execute(query + " ORDER BY seq DESC LIMIT ?", args + [limit]).fetchall()
        return [job for row in rows if (job := self.job(row["id"])) is not None]

    def queue_position(self, job: Job) -> int:
        """Items queued ahead of this job's first queued item (0: next)."""
        return self._db().execute("SELECT COUNT(*) FROM items WHERE status=? AND seq<?", (QUEUED, job.seq)).fetchone()[0]

    def queued_items(self, tenant: str | None = None) -> int:
        """Items waiting to render (only `tenant`'s, when given)."""
        if tenant is None:
            return self._db().execute("SELECT COUNT(*) FROM items WHERE status=?", (QUEUED,)).fetchone()[0]
        return self._db().execute("SELECT COUNT(*) FROM items JOIN jobs ON jobs.id = items.job_id "
                                  "WHERE items.status=? AND jobs.tenant=?", (QUEUED, tenant)).fetchone()[0]

    def counts_by_status(self) -> dict[str, int]:
        return dict(self._db().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

    def request_cancel(self, job_id: str) -> None:
        def cancel(db: sqlite3.Connection) -> None:
            db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            db.execute("UPDATE items SET status=?, finished=?, error='canceled before it started' "
                       "WHERE job_id=? AND status=?", (CANCELED, time.time(), job_id, QUEUED))
            self._refresh(db, job_id)
        self._write(cancel)

    def cancel_requested(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is None or bool(row[0])  # a deleted job counts as canceled

    def delete_job(self, job_id: str) -> None:
        self._write(lambda db: db.execute("DELETE FROM jobs WHERE id=?", (job_id,)))

    def expired_jobs(self, older_than: float) -> list[tuple[str, str]]:
        return [(r["id"], r["tenant"]) for r in self._db().execute(
            "SELECT id, tenant FROM jobs WHERE created<? AND status NOT IN (?, ?)", (older_than, QUEUED, RUNNING))]

    # items ------------------------------------------------------------------------------------

    def claim_item(self) -> Item | None:
        """The oldest queued item, now running; None when the queue is empty."""
        claimed: dict = {}

        def claim(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT job_id, idx FROM items WHERE status=? ORDER BY seq, idx LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return
            now = time.time()
            db.execute("UPDATE items SET status=?, started=?, stage='starting' WHERE job_id=? AND idx=?",
                       (RUNNING, now, row["job_id"], row["idx"]))
            db.execute("UPDATE jobs SET started=COALESCE(started, ?) WHERE id=?", (now, row["job_id"]))
            self._refresh(db, row["job_id"])
            claimed.update(job_id=row["job_id"], idx=row["idx"])

        self._write(claim)
        if not claimed:
            return None
        job = self.job(claimed["job_id"])
        return job.items[claimed["idx"]] if job else None

    def progress(self, item: Item, stage: str, done: int = 0, total: int = 0) -> None:
        self._write(lambda db: db.execute("UPDATE items SET stage=?, frames_done=?, frames_total=? WHERE job_id=? AND idx=?",
                                          (stage, done, total, item.job_id, item.index)))

    def finish_item(self, item: Item, status: str, output: str | None = None, error: str | None = None) -> None:
        def finish(db: sqlite3.Connection) -> None:
            db.execute("UPDATE items SET status=?, output=?, error=?, finished=?, stage=NULL WHERE job_id=? AND idx=?",
                       (status, output, error, time.time(), item.job_id, item.index))
            self._refresh(db, item.job_id)
        self._write(finish)

    def requeue_interrupted(self) -> int:
        """Items left running by a crash or restart go back to the queue."""
        count: dict = {}

        def requeue(db: sqlite3.Connection) -> None:
            count["n"] = db.execute("UPDATE items SET status=?, stage=NULL, frames_done=0 WHERE status=?",
                                    (QUEUED, RUNNING)).rowcount
            for (job_id,) in db.execute("SELECT DISTINCT job_id FROM items WHERE status=?", (QUEUED,)).fetchall():
                self._refresh(db, job_id)
        self._write(requeue)
        return count["n"]

    @staticmethod
    def _refresh(db: sqlite3.Connection, job_id: str) -> None:
        statuses = [r[0] for r in db.execute("SELECT status FROM items WHERE job_id=?", (job_id,))]
        canceled = db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        if not statuses or canceled is None:
            return
        if all(s in ITEM_DONE for s in statuses):
            succeeded = statuses.count(SUCCEEDED)
            if canceled[0] and CANCELED in statuses:
                status = CANCELED
            elif succeeded == len(statuses):
                status = SUCCEEDED
            elif succeeded == 0:
                status = FAILED
            else:
                status = PARTIAL
            db.execute("UPDATE jobs SET status=?, finished=COALESCE(finished, ?) WHERE id=?", (status, time.time(), job_id))
        else:
            status = QUEUED if all(s == QUEUED for s in statuses) else RUNNING
            db.execute("UPDATE jobs SET status=?, finished=NULL WHERE id=?", (status, job_id))

    # templates --------------------------------------------------------------------------------

    def add_template(self, template: Template) -> None:
        values = tuple(template.__dict__.values())
        self._write(lambda db: db.execute(f"INSERT INTO templates VALUES ({','.join('?' * len(values))})", values))

    def template(self, template_id: str, tenant: str | None = None) -> Template | None:
        """The template `template_id` (only if `tenant`'s, when given)."""
        query, args = "SELECT * FROM templates WHERE id=?", [template_id]
        if tenant is not None:
            query, args = query + " AND tenant=?", args + [tenant]
        row = self._db().execute(query, args).fetchone()
        return Template(**dict(row)) if row else None

    def templates(self, tenant: str) -> list[Template]:
        rows = self._db().execute("SELECT * FROM templates WHERE tenant=? ORDER BY created DESC", (tenant,))
        return [Template(**dict(row)) for row in rows]

    def delete_template(self, template_id: str) -> None:
        self._write(lambda db: db.execute("DELETE FROM templates WHERE id=?", (template_id,)))

    def unfinished_jobs(self) -> list[Job]:
        rows = self._db().execute("SELECT id FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING)).fetchall()
        return [job for row in rows if (job := self.job(row["id"])) is not None]

    # housekeeping -----------------------------------------------------------------------------

    def live_uploads(self) -> set[str]:
        """Uploaded narrations that unfinished jobs still need."""
        rows = self._db().execute("SELECT audio_upload FROM jobs WHERE audio_upload IS NOT NULL AND status IN (?, ?)",
                                  (QUEUED, RUNNING))
        return {row[0] for row in rows}

    def unfinished_job_ids(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT id FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING))}

    def template_ids(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT id FROM templates")}

    # tokens -----------------------------------------------------------------------------------

    def revoke(self, jti: str) -> None:
        self._write(lambda db: db.execute("INSERT OR IGNORE INTO revoked (jti, revoked) VALUES (?, ?)", (jti, time.time())))

    def is_revoked(self, jti: str) -> bool:
        return self._db().execute("SELECT 1 FROM revoked WHERE jti=?", (jti,)).fetchone() is not None
