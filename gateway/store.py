"""Durable job state in the database (SQLite or PostgreSQL): one place where every job's and item's
state is written and read.

An item's life: queued -> running -> storing -> succeeded, or -> failed | canceled. `storing`: its
video is rendered and on disk, and is being put where its link will point (at once for local
storage; an upload to S3, retried until confirmed). A job's status is derived from its items
(`partial` when some failed and some succeeded); a job with `zip` stays running until its ZIP is
stored too. The transaction that ends a job also writes its callback into the outbox
(`deliveries`), so that a finished job and its callback cannot be lost apart.

A claim of an item (`lease`) is what a worker's later writes must name: once the item was taken
away from a silent worker (`requeue_lost`) and claimed again, the first worker's answers change
nothing. The schema lives in gateway/migrations; the database (SQLite or PostgreSQL) in database.py."""
from __future__ import annotations

import json
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass

from .database import Database, Transaction

WORKER_NAME = f"{socket.gethostname()}-{os.getpid()}"

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
    lease: str | None = None    # the current claim (None: not claimed)
    attempts: int = 0           # how often it was claimed
    worker: str | None = None   # the process that claimed it last (host-pid)


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


# A write by the claim `:lease` (or by no claim: an external engine's output, found by the
# watcher) applies only while that claim is the item's current one.
_SAME_CLAIM = "(CAST(:lease AS TEXT) IS NULL OR lease=:lease)"


def _item(row) -> Item:
    return Item(row["job_id"], row["idx"], row["template"], row["status"], row["error"], row["output"], row["stage"],
                row["frames_done"], row["frames_total"], row["started"], row["finished"], row["rendered"],
                row["object_key"], row["lease"], row["attempts"], row["worker"])


class Store:
    def __init__(self, url: str):
        self.db = Database(url)
        self.db.migrate()
        self.on_delivery = None  # called after a commit that queued a callback delivery

    def _write(self, statements):
        """Run `statements(tx)` in one write transaction; what it returns."""
        with self.db.transaction() as tx:
            result = statements(tx)
        if tx.queued_delivery and self.on_delivery:
            self.on_delivery()
        return result

    # jobs -------------------------------------------------------------------------------------

    def create_job(self, tenant: str, audio_url: str, audio_upload: str | None, audio_name: str, templates: list[str],
                   callback_url: str | None, metadata: dict | None, zip_: bool, idempotency_key: str | None,
                   request_hash: str) -> tuple[Job, bool]:
        """(job, created): an idempotency key seen before with the same body returns that job."""
        def insert(tx: Transaction) -> tuple[str, bool]:
            if idempotency_key:
                row = tx.one("SELECT id, request_hash FROM jobs WHERE tenant=:tenant AND idempotency_key=:key",
                             tenant=tenant, key=idempotency_key)
                if row:
                    if row["request_hash"] != request_hash:
                        raise Conflict(idempotency_key)
                    return row["id"], False
            job_id = uuid.uuid4().hex
            seq = tx.value("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs")
            tx.run("INSERT INTO jobs (id, tenant, status, created, audio_url, audio_upload, audio_name, callback_url, "
                   "metadata, zip, idempotency_key, request_hash, seq) VALUES (:id, :tenant, :status, :created, "
                   ":audio_url, :audio_upload, :audio_name, :callback_url, :metadata, :zip, :key, :hash, :seq)",
                   id=job_id, tenant=tenant, status=QUEUED, created=time.time(), audio_url=audio_url,
                   audio_upload=audio_upload, audio_name=audio_name, callback_url=callback_url,
                   metadata=json.dumps(metadata) if metadata is not None else None, zip=int(zip_),
                   key=idempotency_key, hash=request_hash, seq=seq)
            tx.run_many("INSERT INTO items (job_id, idx, template, status, seq) VALUES (:job, :idx, :template, :status, :seq)",
                        [{"job": job_id, "idx": i, "template": t, "status": QUEUED, "seq": seq}
                         for i, t in enumerate(templates)])
            return job_id, True

        job_id, created = self._write(insert)
        return self.job(job_id), created

    def job_by_key(self, tenant: str, idempotency_key: str) -> Job | None:
        job_id = self.db.value("SELECT id FROM jobs WHERE tenant=:tenant AND idempotency_key=:key",
                               tenant=tenant, key=idempotency_key)
        return self.job(job_id) if job_id else None

    def job(self, job_id: str, tenant: str | None = None) -> Job | None:
        query = "SELECT * FROM jobs WHERE id=:id" + (" AND tenant=:tenant" if tenant is not None else "")
        row = self.db.one(query, id=job_id, tenant=tenant)
        if row is None:
            return None
        items = [_item(r) for r in self.db.rows("SELECT * FROM items WHERE job_id=:id ORDER BY idx", id=job_id)]
        return Job(row["id"], row["tenant"], row["status"], row["created"], row["started"], row["finished"],
                   row["audio_url"], row["audio_upload"], row["audio_name"], row["callback_url"],
                   json.loads(row["metadata"]) if row["metadata"] else None, bool(row["zip"]),
                   bool(row["cancel_requested"]), row["seq"], items, row["archive_state"], row["archive_key"],
                   row["archive_error"])

    def _jobs(self, ids) -> list[Job]:
        return [job for job_id in ids if (job := self.job(job_id)) is not None]

    def jobs(self, tenant: str, status: str | None, limit: int, before_seq: int | None) -> list[Job]:
        query = "SELECT id FROM jobs WHERE tenant=:tenant"
        if status:
            query += " AND status=:status"
        if before_seq is not None:
            query += " AND seq<:before"
        rows = self.db.rows(query + " ORDER BY seq DESC LIMIT :limit", tenant=tenant, status=status,
                            before=before_seq, limit=limit)
        return self._jobs(row["id"] for row in rows)

    def queue_position(self, job: Job) -> int:
        """Items queued ahead of this job's first queued item (0: next)."""
        return self.db.value("SELECT COUNT(*) FROM items WHERE status=:queued AND seq<:seq", queued=QUEUED, seq=job.seq)

    def queued_items(self, tenant: str | None = None) -> int:
        """Items waiting to render (only `tenant`'s, when given)."""
        if tenant is None:
            return self.db.value("SELECT COUNT(*) FROM items WHERE status=:queued", queued=QUEUED)
        return self.db.value("SELECT COUNT(*) FROM items JOIN jobs ON jobs.id = items.job_id "
                             "WHERE items.status=:queued AND jobs.tenant=:tenant", queued=QUEUED, tenant=tenant)

    def counts_by_status(self) -> dict[str, int]:
        return {row["status"]: row["n"] for row in self.db.rows("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")}

    def request_cancel(self, job_id: str) -> None:
        def cancel(tx: Transaction) -> None:
            tx.run("UPDATE jobs SET cancel_requested=1 WHERE id=:id", id=job_id)
            tx.run("UPDATE items SET status=:canceled, finished=:now, error='canceled before it started' "
                   "WHERE job_id=:id AND status=:queued", canceled=CANCELED, now=time.time(), id=job_id, queued=QUEUED)
            self._refresh(tx, job_id)
        self._write(cancel)

    def cancel_requested(self, job_id: str) -> bool:
        row = self.db.one("SELECT cancel_requested FROM jobs WHERE id=:id", id=job_id)
        return row is None or bool(row["cancel_requested"])  # a deleted job counts as canceled

    def delete_job(self, job_id: str, has_objects: bool = False) -> None:
        """Forget the job (its items and deliveries with it). `has_objects`: its stored objects
        are to be removed too, which is remembered here until `object_removed`."""
        def delete(tx: Transaction) -> None:
            tenant = tx.value("SELECT tenant FROM jobs WHERE id=:id", id=job_id)
            if tenant and has_objects:
                self._remember_removal(tx, tenant, job_id)
            tx.run("DELETE FROM jobs WHERE id=:id", id=job_id)
        self._write(delete)

    def object_removals(self) -> list[tuple[str, str]]:
        """(tenant, job id) of deleted jobs whose objects are still to be removed."""
        return [(r["tenant"], r["job_id"]) for r in self.db.rows("SELECT tenant, job_id FROM object_removals ORDER BY created")]

    def remember_object_removal(self, tenant: str, job_id: str) -> None:
        self._write(lambda tx: self._remember_removal(tx, tenant, job_id))

    @staticmethod
    def _remember_removal(tx: Transaction, tenant: str, job_id: str) -> None:
        tx.run("INSERT INTO object_removals (tenant, job_id, created) VALUES (:tenant, :job, :now) "
               "ON CONFLICT DO NOTHING", tenant=tenant, job=job_id, now=time.time())

    def object_removed(self, tenant: str, job_id: str) -> None:
        self._write(lambda tx: tx.run("DELETE FROM object_removals WHERE tenant=:tenant AND job_id=:job",
                                      tenant=tenant, job=job_id))

    def expired_jobs(self, older_than: float) -> list[tuple[str, str]]:
        return [(r["id"], r["tenant"]) for r in self.db.rows(
            "SELECT id, tenant FROM jobs WHERE created<:older AND status NOT IN (:queued, :running)",
            older=older_than, queued=QUEUED, running=RUNNING)]

    # items ------------------------------------------------------------------------------------

    def _claimed(self, tx: Transaction, job_id: str, idx: int) -> str:
        """Mark the item running under a new lease, by this process; the lease."""
        lease, now = uuid.uuid4().hex, time.time()
        tx.run(f"UPDATE items SET status=:running, started=:now, heartbeat={self.db.now}, stage='starting', "
               "frames_done=0, lease=:lease, attempts=attempts+1, worker=:worker WHERE job_id=:job AND idx=:idx",
               running=RUNNING, now=now, lease=lease, worker=WORKER_NAME, job=job_id, idx=idx)
        tx.run("UPDATE jobs SET started=COALESCE(started, :now) WHERE id=:job", now=now, job=job_id)
        self._refresh(tx, job_id)
        return lease

    def _item_now(self, job_id: str, idx: int) -> Item | None:
        row = self.db.one("SELECT * FROM items WHERE job_id=:job AND idx=:idx", job=job_id, idx=idx)
        return _item(row) if row else None

    def claim_item(self) -> Item | None:
        """The oldest queued item, now running; None when the queue is empty."""
        def claim(tx: Transaction) -> tuple[str, int] | None:
            row = tx.one("SELECT job_id, idx FROM items WHERE status=:queued ORDER BY seq, idx LIMIT 1", queued=QUEUED)
            if row is None:
                return None
            self._claimed(tx, row["job_id"], row["idx"])
            return row["job_id"], row["idx"]

        claimed = self._write(claim)
        return self._item_now(*claimed) if claimed else None

    def claim(self, job_id: str, idx: int, lost_after: float) -> Item | None:
        """This item, now running under a new lease: if it is queued, or if its worker has not
        been heard from for `lost_after` seconds. None otherwise (done, canceled, or running
        elsewhere): a task delivered twice renders once."""
        def claim(tx: Transaction) -> bool:
            row = tx.one(f"SELECT status, COALESCE(heartbeat, 0) < {self.db.now} - :lost AS silent FROM items "
                         "WHERE job_id=:job AND idx=:idx", job=job_id, idx=idx, lost=lost_after)
            if row is None:
                return False
            lost = row["status"] in (RUNNING, STORING) and bool(row["silent"])
            if row["status"] != QUEUED and not lost:
                return False
            self._claimed(tx, job_id, idx)
            return True

        return self._item_now(job_id, idx) if self._write(claim) else None

    def progress(self, item: Item, stage: str, done: int = 0, total: int = 0) -> bool:
        """False when the item is no longer this claim's to render (canceled, or taken away from
        a worker that was silent too long)."""
        return bool(self._write(lambda tx: tx.run(
            f"UPDATE items SET stage=:stage, frames_done=:done, frames_total=:total, heartbeat={self.db.now} "
            "WHERE job_id=:job AND idx=:idx AND status=:running AND lease=:lease",
            stage=stage, done=done, total=total, job=item.job_id, idx=item.index, running=RUNNING,
            lease=item.lease).rowcount))

    def heartbeat(self, leases: list[str]) -> None:
        """Workers holding these leases are alive."""
        if leases:
            self._write(lambda tx: tx.run_many(f"UPDATE items SET heartbeat={self.db.now} WHERE lease=:lease",
                                               [{"lease": lease} for lease in leases]))

    def finish_item(self, item: Item, status: str, error: str | None = None) -> None:
        """A running item failed or was canceled (one that moved on meanwhile is left alone)."""
        def finish(tx: Transaction) -> None:
            tx.run("UPDATE items SET status=:status, error=:error, finished=:now, stage=NULL "
                   "WHERE job_id=:job AND idx=:idx AND status=:running AND lease=:lease",
                   status=status, error=error, now=time.time(), job=item.job_id, idx=item.index, running=RUNNING,
                   lease=item.lease)
            self._refresh(tx, item.job_id)
        self._write(finish)

    def rendered(self, item: Item, path: str) -> bool:
        """The item's video is at `path`: it is to be stored. False when the item was past that
        already (another thread saw the file first, it was canceled, or, for a claimed item,
        another worker holds it now). An item found rendered without a claim (`lease` None: an
        external engine's output) is taken whatever its claim."""
        def render_done(tx: Transaction) -> bool:
            changed = tx.run(
                f"UPDATE items SET status=:storing, output=:path, rendered=:now, heartbeat={self.db.now}, "
                "stage='storing the video' "
                f"WHERE job_id=:job AND idx=:idx AND status IN (:queued, :running) AND {_SAME_CLAIM}",
                storing=STORING, path=path, now=time.time(), job=item.job_id, idx=item.index, queued=QUEUED,
                running=RUNNING, lease=item.lease).rowcount
            if changed:
                self._refresh(tx, item.job_id)
            return bool(changed)
        return self._write(render_done)

    def stored(self, item: Item, object_key: str | None) -> None:
        """The item's video is where its link points (`object_key` in the bucket; None: the
        local file): it succeeded."""
        self._end_storing(item, SUCCEEDED, object_key, None)

    def fail_storing(self, item: Item, error: str) -> None:
        self._end_storing(item, FAILED, None, error)

    def _end_storing(self, item: Item, status: str, object_key: str | None, error: str | None) -> None:
        def end(tx: Transaction) -> None:
            tx.run("UPDATE items SET status=:status, object_key=:key, error=:error, finished=:now, stage=NULL "
                   f"WHERE job_id=:job AND idx=:idx AND status=:storing AND {_SAME_CLAIM}",
                   status=status, key=object_key, error=error, now=time.time(), job=item.job_id, idx=item.index,
                   storing=STORING, lease=item.lease)
            self._refresh(tx, item.job_id)
        self._write(end)

    def storing_items(self) -> list[Item]:
        rows = self.db.rows("SELECT * FROM items WHERE status=:storing ORDER BY seq, idx", storing=STORING)
        return [_item(row) for row in rows]

    def archiving_jobs(self) -> list[Job]:
        rows = self.db.rows("SELECT id FROM jobs WHERE archive_state=:pending ORDER BY seq", pending=ARCHIVE_PENDING)
        return self._jobs(row["id"] for row in rows)

    def archive_done(self, job_id: str, object_key: str | None, error: str | None = None) -> None:
        """The job's ZIP is stored (`object_key`; None: the local file), or `error` says why it
        is not; either way the job can end."""
        def done(tx: Transaction) -> None:
            tx.run("UPDATE jobs SET archive_state=:state, archive_key=:key, archive_error=:error "
                   "WHERE id=:id AND archive_state=:pending", state=ARCHIVE_FAILED if error else ARCHIVE_READY,
                   key=object_key, error=error, id=job_id, pending=ARCHIVE_PENDING)
            self._refresh(tx, job_id)
        self._write(done)

    def _requeue(self, tx: Transaction, where: str, **params) -> int:
        """Items matching `where` go back to the queue, unclaimed and not yet sent."""
        jobs = {row["job_id"] for row in tx.rows(f"SELECT DISTINCT job_id FROM items WHERE {where}", **params)}
        count = tx.run(f"UPDATE items SET status=:queued, stage=NULL, frames_done=0, lease=NULL, dispatched=NULL "
                       f"WHERE {where}", queued=QUEUED, **params).rowcount
        for job_id in sorted(jobs):
            self._refresh(tx, job_id)
        return count

    def release(self, item: Item) -> None:
        """A worker that is stopping gives its item back to the queue (if it still holds it),
        rendering or storing: its video is on that worker's disk."""
        self._write(lambda tx: self._requeue(
            tx, "job_id=:job AND idx=:idx AND lease=:lease AND status IN (:running, :storing)",
            job=item.job_id, idx=item.index, lease=item.lease, running=RUNNING, storing=STORING))

    def requeue_interrupted(self) -> int:
        """Items this machine's render threads left running (a crash or restart) go back to the queue."""
        return self._write(lambda tx: self._requeue(tx, "status=:running AND (worker IS NULL OR worker LIKE :host)",
                                                    running=RUNNING, host=socket.gethostname() + "-%"))

    def requeue_lost(self, lost_after: float, most_attempts: int) -> tuple[int, int]:
        """Items whose worker has not been heard from for `lost_after` seconds (killed, or cut off)
        go back to the queue, a rendering one and a storing one (its video is on that worker's
        disk), unless they were claimed `most_attempts` times: an item that takes its worker down
        fails instead of taking down every worker in turn. (requeued, failed)."""
        silent = (f"status IN (:running, :storing) AND lease IS NOT NULL "
                  f"AND COALESCE(heartbeat, 0) < {self.db.now} - :lost")
        params = dict(running=RUNNING, storing=STORING, lost=lost_after, most=most_attempts)

        def requeue(tx: Transaction) -> tuple[int, int]:
            doomed = tx.rows(f"SELECT DISTINCT job_id FROM items WHERE {silent} AND attempts >= :most", **params)
            failed = tx.run(f"UPDATE items SET status=:failed, finished=:now, stage=NULL, lease=NULL, error=:error "
                            f"WHERE {silent} AND attempts >= :most", failed=FAILED, now=time.time(),
                            error=f"its worker stopped answering while rendering it, {most_attempts} times; the "
                                  "template or narration may be too large for the workers' memory", **params).rowcount
            for row in doomed:
                self._refresh(tx, row["job_id"])
            return self._requeue(tx, silent, **params), failed
        return self._write(requeue)

    # dispatch to a broker (HEYGEM_QUEUE=celery) ---------------------------------------------------

    def undispatched_items(self, limit: int) -> list[tuple[str, int, int]]:
        """(job, index, attempts) of queued items not yet sent to the broker, oldest first."""
        return [(r["job_id"], r["idx"], r["attempts"]) for r in self.db.rows(
            "SELECT job_id, idx, attempts FROM items WHERE status=:queued AND dispatched IS NULL "
            "ORDER BY seq, idx LIMIT :limit", queued=QUEUED, limit=limit)]

    def dispatched(self, sent: list[tuple[str, int, int]]) -> None:
        """These items' tasks are at the broker. An item claimed and given back meanwhile (its
        attempts moved on) keeps waiting to be sent again."""
        self._write(lambda tx: tx.run_many(
            "UPDATE items SET dispatched=:now WHERE job_id=:job AND idx=:idx AND status=:queued "
            "AND dispatched IS NULL AND attempts=:attempts",
            [{"now": time.time(), "job": job, "idx": idx, "queued": QUEUED, "attempts": attempts}
             for job, idx, attempts in sent]))

    def redispatch(self) -> int:
        """Every queued item is to be sent again (the broker lost its messages)."""
        return self._write(lambda tx: tx.run("UPDATE items SET dispatched=NULL WHERE status=:queued AND dispatched "
                                             "IS NOT NULL", queued=QUEUED).rowcount)

    def in_flight_items(self) -> int:
        """Items that should have a message at the broker: queued and sent, or claimed."""
        return self.db.value("SELECT COUNT(*) FROM items WHERE (status=:queued AND dispatched IS NOT NULL) "
                             "OR status IN (:running, :storing)", queued=QUEUED, running=RUNNING, storing=STORING)

    def _refresh(self, tx: Transaction, job_id: str) -> None:
        statuses = [r["status"] for r in tx.rows("SELECT status FROM items WHERE job_id=:id", id=job_id)]
        job = tx.one("SELECT status, cancel_requested, zip, archive_state, callback_url FROM jobs WHERE id=:id", id=job_id)
        if not statuses or job is None:
            return
        if all(s in ITEM_DONE for s in statuses):
            status, succeeded = outcome(statuses, job["cancel_requested"]), statuses.count(SUCCEEDED)
            if job["zip"] and succeeded and job["archive_state"] not in (ARCHIVE_READY, ARCHIVE_FAILED):
                # The job ends when its ZIP is stored: its callback carries the ZIP's link.
                tx.run("UPDATE jobs SET status=:running, archive_state=:pending WHERE id=:id",
                       running=RUNNING, pending=ARCHIVE_PENDING, id=job_id)
                return
            tx.run("UPDATE jobs SET status=:status, finished=COALESCE(finished, :now) WHERE id=:id",
                   status=status, now=time.time(), id=job_id)
            if job["status"] not in JOB_DONE and job["callback_url"]:
                self._add_delivery(tx, job_id, job["callback_url"], "job." + status)
        else:
            status = QUEUED if all(s == QUEUED for s in statuses) else RUNNING
            tx.run("UPDATE jobs SET status=:status, finished=NULL WHERE id=:id", status=status, id=job_id)

    # callbacks ------------------------------------------------------------------------------------

    @staticmethod
    def _add_delivery(tx: Transaction, job_id: str, url: str, event: str) -> None:
        tx.queued_delivery = True
        now = time.time()
        seq = tx.value("SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries")
        tx.run("INSERT INTO deliveries (id, job_id, url, event, status, created, next_attempt, seq) "
               "VALUES (:id, :job, :url, :event, :pending, :now, :now, :seq)",
               id="dlv_" + uuid.uuid4().hex, job=job_id, url=url, event=event, pending=PENDING, now=now, seq=seq)

    def redeliver(self, job: Job, most: int) -> str | None:
        """Send the finished job's callback again, as a new delivery. Refused (the reason is
        returned) while one is still on its way, or when the job has had `most` deliveries."""
        def add(tx: Transaction) -> str | None:
            row = tx.one("SELECT COUNT(CASE WHEN status=:pending THEN 1 END) AS pending, COUNT(*) AS total "
                         "FROM deliveries WHERE job_id=:job", pending=PENDING, job=job.id)
            if row["pending"]:
                return "a delivery of this job's callback is still on its way; see the job's 'callback'"
            if row["total"] >= most:
                return f"this job's callback has been delivered {row['total']} times, the most there may be"
            self._add_delivery(tx, job.id, job.callback_url, "job." + job.status)
            return None
        return self._write(add)

    # A pending delivery behind an earlier pending one of its job waits for it (in order per job).
    _READY = ("FROM deliveries AS d JOIN jobs ON jobs.id = d.job_id WHERE d.status=:pending AND NOT EXISTS "
              "(SELECT 1 FROM deliveries AS e WHERE e.job_id=d.job_id AND e.status=:pending AND e.seq<d.seq)")

    def due_deliveries(self, now: float, limit: int, skip_tenants: set[str] = frozenset()) -> list[Delivery]:
        """Deliveries whose attempt is due: the oldest of each tenant (those in `skip_tenants`
        left out), oldest first; none behind an earlier pending one of its job (callbacks
        arrive in order). One per tenant: a tenant with many due deliveries cannot crowd out
        the others."""
        skip = {f"skip{i}": tenant for i, tenant in enumerate(sorted(skip_tenants))}
        not_skipped = f" AND jobs.tenant NOT IN ({', '.join(':' + name for name in skip)})" if skip else ""
        rows = self.db.rows(
            f"SELECT * FROM (SELECT d.*, jobs.tenant AS tenant, ROW_NUMBER() OVER (PARTITION BY jobs.tenant "
            f"ORDER BY d.next_attempt, d.seq) AS rank {self._READY} AND d.next_attempt<=:now{not_skipped}) AS due "
            f"WHERE rank=1 ORDER BY next_attempt LIMIT :limit", pending=PENDING, now=now, limit=limit, **skip)
        return [Delivery(**{k: v for k, v in row.items() if k != "rank"}) for row in rows]

    def next_delivery_at(self) -> float | None:
        return self.db.value(f"SELECT MIN(d.next_attempt) {self._READY}", pending=PENDING)

    def latest_delivery(self, job_id: str) -> Delivery | None:
        row = self.db.one("SELECT d.*, jobs.tenant AS tenant FROM deliveries AS d JOIN jobs ON jobs.id = d.job_id "
                          "WHERE d.job_id=:job ORDER BY d.seq DESC LIMIT 1", job=job_id)
        return Delivery(**row) if row else None

    def claim_delivery(self, delivery_id: str, now: float, lease_seconds: float) -> bool:
        """Take a due delivery for one attempt: it is not due again until the lease ends (then
        it is tried again, should this process die mid-attempt). False when another took it."""
        return bool(self._write(lambda tx: tx.run(
            "UPDATE deliveries SET next_attempt=:until WHERE id=:id AND status=:pending AND next_attempt<=:now",
            until=now + lease_seconds, id=delivery_id, pending=PENDING, now=now).rowcount))

    def delivery_attempted(self, delivery_id: str, status: str, http_status: int | None, error: str | None,
                           next_attempt: float | None) -> None:
        """One attempt's outcome: `status` delivered, pending (again at `next_attempt`) or failed."""
        now = time.time()
        self._write(lambda tx: tx.run(
            "UPDATE deliveries SET status=:status, attempts=attempts+1, last_attempt=:now, last_status=:http, "
            "last_error=:error, next_attempt=COALESCE(:next, next_attempt), delivered=:delivered WHERE id=:id",
            status=status, now=now, http=http_status, error=error, next=next_attempt,
            delivered=now if status == DELIVERED else None, id=delivery_id))

    def signing_secret(self, tenant: str, rotate: bool = False) -> tuple[str, str | None, float | None]:
        """(secret, previous secret, when it was rotated) of the tenant's callback signatures,
        made on first use; `rotate` makes a new one (the old one becomes `previous`)."""
        query = "SELECT secret, previous, rotated FROM signing_secrets WHERE tenant=:tenant"

        def get(tx: Transaction):
            row = tx.one(query, tenant=tenant)
            if row is None:
                tx.run("INSERT INTO signing_secrets (tenant, secret, created) VALUES (:tenant, :secret, :now)",
                       tenant=tenant, secret="whsec_" + secrets.token_urlsafe(32), now=time.time())
            elif rotate:
                tx.run("UPDATE signing_secrets SET previous=secret, secret=:secret, rotated=:now WHERE tenant=:tenant",
                       secret="whsec_" + secrets.token_urlsafe(32), now=time.time(), tenant=tenant)
            return tx.one(query, tenant=tenant)

        row = self.db.one(query, tenant=tenant)
        if row is None or rotate:
            row = self._write(get)
        return row["secret"], row["previous"], row["rotated"]

    # templates --------------------------------------------------------------------------------

    def add_template(self, template: Template) -> None:
        values = dict(template.__dict__)
        self._write(lambda tx: tx.run(f"INSERT INTO templates ({', '.join(values)}) "
                                      f"VALUES ({', '.join(':' + name for name in values)})", **values))

    def template(self, template_id: str, tenant: str | None = None) -> Template | None:
        """The template `template_id` (only if `tenant`'s, when given)."""
        query = "SELECT * FROM templates WHERE id=:id" + (" AND tenant=:tenant" if tenant is not None else "")
        row = self.db.one(query, id=template_id, tenant=tenant)
        return Template(**row) if row else None

    def templates(self, tenant: str) -> list[Template]:
        rows = self.db.rows("SELECT * FROM templates WHERE tenant=:tenant ORDER BY created DESC", tenant=tenant)
        return [Template(**row) for row in rows]

    def delete_template(self, template_id: str) -> None:
        self._write(lambda tx: tx.run("DELETE FROM templates WHERE id=:id", id=template_id))

    def unfinished_jobs(self) -> list[Job]:
        rows = self.db.rows("SELECT id FROM jobs WHERE status IN (:queued, :running)", queued=QUEUED, running=RUNNING)
        return self._jobs(row["id"] for row in rows)

    # housekeeping -----------------------------------------------------------------------------

    def live_uploads(self) -> set[str]:
        """Uploaded narrations that unfinished jobs still need."""
        rows = self.db.rows("SELECT audio_upload FROM jobs WHERE audio_upload IS NOT NULL AND status IN (:queued, :running)",
                            queued=QUEUED, running=RUNNING)
        return {row["audio_upload"] for row in rows}

    def unfinished_job_ids(self) -> set[str]:
        return {row["id"] for row in self.db.rows("SELECT id FROM jobs WHERE status IN (:queued, :running)",
                                                  queued=QUEUED, running=RUNNING)}

    def template_ids(self) -> set[str]:
        return {row["id"] for row in self.db.rows("SELECT id FROM templates")}

    # tokens -----------------------------------------------------------------------------------

    def revoke(self, jti: str) -> None:
        self._write(lambda tx: tx.run("INSERT INTO revoked (jti, revoked) VALUES (:jti, :now) ON CONFLICT DO NOTHING",
                                      jti=jti, now=time.time()))

    def is_revoked(self, jti: str) -> bool:
        return self.db.value("SELECT 1 FROM revoked WHERE jti=:jti", jti=jti) is not None
