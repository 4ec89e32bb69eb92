"""Durable job state in SQLite (WAL): one place where every job's and item's state is written
and read.

An item's life: queued -> running -> storing -> succeeded, or -> failed | canceled. `storing`: its
video is rendered and on disk, and is being put where its link will point (at once for local
storage; an upload to S3, retried until confirmed). A job's status is derived from its items
(`partial` when some failed and some succeeded); a job with `zip` stays running until its ZIP is
stored too. The transaction that ends a job also writes its callback into the outbox
(`deliveries`), so that a finished job and its callback cannot be lost apart."""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, PARTIAL = "queued", "running", "succeeded", "failed", "canceled", "partial"
STORING = "storing"
ITEM_DONE = (SUCCEEDED, FAILED, CANCELED)
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELED)
JOB_DONE = (SUCCEEDED, PARTIAL, FAILED, CANCELED)
# A job's ZIP: none asked or made yet (NULL), being made and stored, ready, or given up on.
ARCHIVE_PENDING, ARCHIVE_READY, ARCHIVE_FAILED = "pending", "ready", "failed"
# A callback delivery: waiting for its (next) attempt, delivered (2xx), or given up on.
PENDING, DELIVERED = "pending", "delivered"
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
    # Object storage and result callbacks.
    """ALTER TABLE items ADD COLUMN object_key TEXT;
       ALTER TABLE items ADD COLUMN rendered REAL;
       ALTER TABLE jobs ADD COLUMN archive_state TEXT;
       ALTER TABLE jobs ADD COLUMN archive_key TEXT;
       ALTER TABLE jobs ADD COLUMN archive_error TEXT;
       CREATE TABLE deliveries (
           id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
           url TEXT NOT NULL, event TEXT NOT NULL, status TEXT NOT NULL,
           attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, next_attempt REAL NOT NULL,
           last_attempt REAL, last_status INTEGER, last_error TEXT, delivered REAL, seq INTEGER NOT NULL);
       CREATE INDEX deliveries_due ON deliveries (status, next_attempt);
       CREATE INDEX deliveries_job ON deliveries (job_id, seq);
       CREATE TABLE signing_secrets (
           tenant TEXT PRIMARY KEY, secret TEXT NOT NULL, previous TEXT, rotated REAL, created REAL NOT NULL);
       CREATE TABLE object_removals (tenant TEXT NOT NULL, job_id TEXT NOT NULL, created REAL NOT NULL,
           PRIMARY KEY (tenant, job_id));""",
]


def outcome(item_statuses: list[str], cancel_requested: bool) -> str:
    """A job's status once all its items are done."""
    succeeded = item_statuses.count(SUCCEEDED)
    if cancel_requested and CANCELED in item_statuses:
        return CANCELED
    if succeeded == len(item_statuses):
        return SUCCEEDED
    return FAILED if succeeded == 0 else PARTIAL


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
    rendered: float | None      # when its video was on disk
    object_key: str | None      # where it was stored (None: the local file)


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
    archive_state: str | None
    archive_key: str | None
    archive_error: str | None


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


@dataclass
class Delivery:
    id: str
    job_id: str
    url: str
    event: str
    status: str                 # pending | delivered | failed
    attempts: int
    created: float
    next_attempt: float
    last_attempt: float | None
    last_status: int | None     # the receiver's HTTP status
    last_error: str | None
    delivered: float | None
    seq: int
    tenant: str


class Conflict(Exception):
    """The idempotency key was used with another request body."""


class Store:
    def __init__(self, path: str):
        self.path = path
        self.local = threading.local()
        self.write_lock = threading.Lock()  # one writer at a time: no SQLITE_BUSY retries
        self.on_delivery = None  # called after a commit that queued a callback delivery
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
            self.local.queued_delivery = False
            try:
                statements(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if self.local.queued_delivery and self.on_delivery:
            self.on_delivery()

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

    def job_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        row = self._db().execute("SELECT id FROM jobs WHERE tenant=? AND idempotency_key=?",
                                 (tenant, idempotency_key)).fetchone()
        return self.job(row["id"]) if row else None

    def job(self, job_id: str, tenant: str | None = None) -> Job | None:
        db = self._db()
        query, args = "SELECT * FROM jobs WHERE id=?", [job_id]
        if tenant is not None:
            query, args = query + " AND tenant=?", args + [tenant]
        row = db.execute(query, args).fetchone()
        if row is None:
            return None
        items = [Item(r["job_id"], r["idx"], r["template"], r["status"], r["error"], r["output"], r["stage"],
                      r["frames_done"], r["frames_total"], r["started"], r["finished"], r["rendered"], r["object_key"])
                 for r in db.execute("SELECT * FROM items WHERE job_id=? ORDER BY idx", (job_id,))]
        return Job(row["id"], row["tenant"], row["status"], row["created"], row["started"], row["finished"],
                   row["audio_url"], row["audio_upload"], row["audio_name"], row["callback_url"],
                   json.loads(row["metadata"]) if row["metadata"] else None, bool(row["zip"]),
                   bool(row["cancel_requested"]), row["seq"], items, row["archive_state"], row["archive_key"],
                   row["archive_error"])

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

    def delete_job(self, job_id: str, has_objects: bool = False) -> None:
        """Forget the job (its items and deliveries with it). `has_objects`: its stored objects
        are to be removed too, which is remembered here until `object_removed`."""
        def delete(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT tenant FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row and has_objects:
                db.execute("INSERT OR IGNORE INTO object_removals VALUES (?, ?, ?)", (row["tenant"], job_id, time.time()))
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        self._write(delete)

    def object_removals(self) -> list[tuple[str, str]]:
        """(tenant, job id) of deleted jobs whose objects are still to be removed."""
        return [(r[0], r[1]) for r in self._db().execute("SELECT tenant, job_id FROM object_removals ORDER BY created")]

    def remember_object_removal(self, tenant: str, job_id: str) -> None:
        self._write(lambda db: db.execute("INSERT OR IGNORE INTO object_removals VALUES (?, ?, ?)",
                                          (tenant, job_id, time.time())))

    def object_removed(self, tenant: str, job_id: str) -> None:
        self._write(lambda db: db.execute("DELETE FROM object_removals WHERE tenant=? AND job_id=?", (tenant, job_id)))

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
        self._write(lambda db: db.execute("UPDATE items SET stage=?, frames_done=?, frames_total=? WHERE job_id=? AND idx=? "
                                          "AND status=?", (stage, done, total, item.job_id, item.index, RUNNING)))

    def finish_item(self, item: Item, status: str, error: str | None = None) -> None:
        """A running item failed or was canceled (one that moved on meanwhile is left alone)."""
        def finish(db: sqlite3.Connection) -> None:
            db.execute("UPDATE items SET status=?, error=?, finished=?, stage=NULL WHERE job_id=? AND idx=? AND status=?",
                       (status, error, time.time(), item.job_id, item.index, RUNNING))
            self._refresh(db, item.job_id)
        self._write(finish)

    def rendered(self, item: Item, path: str) -> bool:
        """The item's video is on disk at `path`: it is to be stored. False when the item was
        past that already (another thread saw the file first, or it was canceled)."""
        changed: dict = {}

        def render_done(db: sqlite3.Connection) -> None:
            changed["n"] = db.execute(
                "UPDATE items SET status=?, output=?, rendered=?, stage='storing the video' "
                "WHERE job_id=? AND idx=? AND status IN (?, ?)",
                (STORING, path, time.time(), item.job_id, item.index, QUEUED, RUNNING)).rowcount
            if changed["n"]:
                self._refresh(db, item.job_id)
        self._write(render_done)
        return bool(changed["n"])

    def stored(self, item: Item, object_key: str | None) -> None:
        """The item's video is where its link points (`object_key` in the bucket; None: the
        local file): it succeeded."""
        def store_done(db: sqlite3.Connection) -> None:
            db.execute("UPDATE items SET status=?, object_key=?, finished=?, stage=NULL WHERE job_id=? AND idx=? "
                       "AND status=?", (SUCCEEDED, object_key, time.time(), item.job_id, item.index, STORING))
            self._refresh(db, item.job_id)
        self._write(store_done)

    def fail_storing(self, item: Item, error: str) -> None:
        def give_up(db: sqlite3.Connection) -> None:
            db.execute("UPDATE items SET status=?, error=?, finished=?, stage=NULL WHERE job_id=? AND idx=? AND status=?",
                       (FAILED, error, time.time(), item.job_id, item.index, STORING))
            self._refresh(db, item.job_id)
        self._write(give_up)

    def storing_items(self) -> list[Item]:
        rows = self._db().execute("SELECT job_id, idx FROM items WHERE status=? ORDER BY seq, idx", (STORING,)).fetchall()
        return [job.items[row["idx"]] for row in rows if (job := self.job(row["job_id"])) is not None]

    def archiving_jobs(self) -> list[Job]:
        rows = self._db().execute("SELECT id FROM jobs WHERE archive_state=? ORDER BY seq", (ARCHIVE_PENDING,)).fetchall()
        return [job for row in rows if (job := self.job(row["id"])) is not None]

    def archive_done(self, job_id: str, object_key: str | None, error: str | None = None) -> None:
        """The job's ZIP is stored (`object_key`; None: the local file), or `error` says why it
        is not; either way the job can end."""
        def done(db: sqlite3.Connection) -> None:
            db.execute("UPDATE jobs SET archive_state=?, archive_key=?, archive_error=? WHERE id=? AND archive_state=?",
                       (ARCHIVE_FAILED if error else ARCHIVE_READY, object_key, error, job_id, ARCHIVE_PENDING))
            self._refresh(db, job_id)
        self._write(done)

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

    def _refresh(self, db: sqlite3.Connection, job_id: str) -> None:
        statuses = [r[0] for r in db.execute("SELECT status FROM items WHERE job_id=?", (job_id,))]
        job = db.execute("SELECT status, cancel_requested, zip, archive_state, callback_url FROM jobs WHERE id=?",
                         (job_id,)).fetchone()
        if not statuses or job is None:
            return
        if all(s in ITEM_DONE for s in statuses):
            status, succeeded = outcome(statuses, job["cancel_requested"]), statuses.count(SUCCEEDED)
            if job["zip"] and succeeded and job["archive_state"] not in (ARCHIVE_READY, ARCHIVE_FAILED):
                # The job ends when its ZIP is stored: its callback carries the ZIP's link.
                db.execute("UPDATE jobs SET status=?, archive_state=? WHERE id=?", (RUNNING, ARCHIVE_PENDING, job_id))
                return
            db.execute("UPDATE jobs SET status=?, finished=COALESCE(finished, ?) WHERE id=?", (status, time.time(), job_id))
            if job["status"] not in JOB_DONE and job["callback_url"]:
                self._add_delivery(db, job_id, job["callback_url"], "job." + status)
        else:
            status = QUEUED if all(s == QUEUED for s in statuses) else RUNNING
            db.execute("UPDATE jobs SET status=?, finished=NULL WHERE id=?", (status, job_id))

    # callbacks ------------------------------------------------------------------------------------

    def _add_delivery(self, db: sqlite3.Connection, job_id: str, url: str, event: str) -> None:
        self.local.queued_delivery = True
        now = time.time()
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries").fetchone()[0]
        db.execute("INSERT INTO deliveries (id, job_id, url, event, status, created, next_attempt, seq) "
                   "VALUES (?,?,?,?,?,?,?,?)", ("dlv_" + uuid.uuid4().hex, job_id, url, event, PENDING, now, now, seq))

    def redeliver(self, job: Job, most: int) -> str | None:
        """Send the finished job's callback again, as a new delivery. Refused (the reason is
        returned) while one is still on its way, or when the job has had `most` deliveries."""
        refused: dict = {}

        def add(db: sqlite3.Connection) -> None:
            pending, total = db.execute("SELECT SUM(status=?), COUNT(*) FROM deliveries WHERE job_id=?",
                                        (PENDING, job.id)).fetchone()
            if pending:
                refused["why"] = "a delivery of this job's callback is still on its way; see the job's 'callback'"
            elif total >= most:
                refused["why"] = f"this job's callback has been delivered {total} times, the most there may be"
            else:
                self._add_delivery(db, job.id, job.callback_url, "job." + job.status)
        self._write(add)
        return refused.get("why")

    # A pending delivery behind an earlier pending one of its job waits for it (in order per job).
    _READY = ("FROM deliveries AS d JOIN jobs ON jobs.id = d.job_id WHERE d.status=? AND NOT EXISTS "
              "(SELECT 1 FROM deliveries AS e WHERE e.job_id=d.job_id AND e.status=? AND e.seq<d.seq)")

    def due_deliveries(self, now: float, limit: int, skip_tenants: set[str] = frozenset()) -> list[Delivery]:
        """Deliveries whose attempt is due: the oldest of each tenant (those in `skip_tenants`
        left out), oldest first; none behind an earlier pending one of its job (callbacks
        arrive in order). One per tenant: a tenant with many due deliveries cannot crowd out
        the others."""
        skip = sorted(skip_tenants)
        rows = self._db().execute(
            f"SELECT * FROM (SELECT d.*, jobs.tenant AS tenant, ROW_NUMBER() OVER (PARTITION BY jobs.tenant "
            f"ORDER BY d.next_attempt, d.seq) AS rank {self._READY} AND d.next_attempt<=? "
            f"AND jobs.tenant NOT IN ({','.join('?' * len(skip))})) WHERE rank=1 ORDER BY next_attempt LIMIT ?",
            (PENDING, PENDING, now, *skip, limit))
        return [Delivery(**{k: v for k, v in dict(row).items() if k != "rank"}) for row in rows]

    def next_delivery_at(self) -> float | None:
        return self._db().execute(f"SELECT MIN(d.next_attempt) {self._READY}", (PENDING, PENDING)).fetchone()[0]

    def latest_delivery(self, job_id: str) -> Delivery | None:
        row = self._db().execute("SELECT d.*, jobs.tenant AS tenant FROM deliveries AS d JOIN jobs ON jobs.id = d.job_id "
                                 "WHERE d.job_id=? ORDER BY d.seq DESC LIMIT 1", (job_id,)).fetchone()
        return Delivery(**dict(row)) if row else None

    def claim_delivery(self, delivery_id: str, now: float, lease_seconds: float) -> bool:
        """Take a due delivery for one attempt: it is not due again until the lease ends (then
        it is tried again, should this process die mid-attempt). False when another took it."""
        claimed: dict = {}
        self._write(lambda db: claimed.update(n=db.execute(
            "UPDATE deliveries SET next_attempt=? WHERE id=? AND status=? AND next_attempt<=?",
            (now + lease_seconds, delivery_id, PENDING, now)).rowcount))
        return bool(claimed["n"])

    def delivery_attempted(self, delivery_id: str, status: str, http_status: int | None, error: str | None,
                           next_attempt: float | None) -> None:
        """One attempt's outcome: `status` delivered, pending (again at `next_attempt`) or failed."""
        now = time.time()
        self._write(lambda db: db.execute(
            "UPDATE deliveries SET status=?, attempts=attempts+1, last_attempt=?, last_status=?, last_error=?, "
            "next_attempt=COALESCE(?, next_attempt), delivered=? WHERE id=?",
            (status, now, http_status, error, next_attempt, now if status == DELIVERED else None, delivery_id)))

    def signing_secret(self, tenant: str, rotate: bool = False) -> tuple[str, str | None, float | None]:
        """(secret, previous secret, when it was rotated) of the tenant's callback signatures,
        made on first use; `rotate` makes a new one (the old one becomes `previous`)."""
        def get(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT secret FROM signing_secrets WHERE tenant=?", (tenant,)).fetchone()
            if row is None:
                db.execute("INSERT INTO signing_secrets (tenant, secret, created) VALUES (?, ?, ?)",
                           (tenant, "whsec_" + secrets.token_urlsafe(32), time.time()))
            elif rotate:
                db.execute("UPDATE signing_secrets SET previous=secret, secret=?, rotated=? WHERE tenant=?",
                           ("whsec_" + secrets.token_urlsafe(32), time.time(), tenant))
        row = self._db().execute("SELECT secret, previous, rotated FROM signing_secrets WHERE tenant=?", (tenant,)).fetchone()
        if row is None or rotate:
            self._write(get)
            row = self._db().execute("SELECT secret, previous, rotated FROM signing_secrets WHERE tenant=?",
                                     (tenant,)).fetchone()
        return row["secret"], row["previous"], row["rotated"]

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
