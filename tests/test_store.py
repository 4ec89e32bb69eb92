"""The item state machine, the same on SQLite and on PostgreSQL (a real server, started here):
claims by lease, a stale worker's late writes, lost workers, items that take workers down,
dispatch marks, and the migration of a SQLite file from before Alembic."""
from __future__ import annotations

import sqlite3

import pytest
from servers import PostgresServer

from gateway.store import FAILED, QUEUED, RUNNING, STORING, SUCCEEDED, Store


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path}/store.sqlite3")
        return
    built = Store(request.getfixturevalue("postgres").url)
    with built.db.transaction() as tx:  # one server for the module: each test starts empty
        tx.run("TRUNCATE jobs CASCADE")
    yield built
    built.db.close()


def new_job(store: Store, items: int = 1):
    job, _ = store.create_job("acme", "http://files/a.wav", None, "a.wav", ["http://files/t.mp4"] * items,
                              None, None, False, None, "hash")
    return job


def silence(store: Store, seconds: float) -> None:
    """Every claimed item's worker last heard from `seconds` ago."""
    with store.db.transaction() as tx:
        tx.run(f"UPDATE items SET heartbeat = {store.db.now} - :ago WHERE lease IS NOT NULL", ago=seconds)


def test_a_task_delivered_twice_is_claimed_once(store):
    job = new_job(store)
    first = store.claim(job.id, 0, lost_after=60)
    assert first and first.status == RUNNING and first.attempts == 1
    assert store.claim(job.id, 0, lost_after=60) is None  # its worker is alive
    assert store.progress(first, "rendering", 1, 10)


def test_a_stale_worker_changes_nothing_once_its_item_was_taken_away(store):
    job = new_job(store)
    stale = store.claim(job.id, 0, lost_after=60)
    silence(store, 120)
    current = store.claim(job.id, 0, lost_after=60)  # another worker takes the silent one's item
    assert current and current.lease != stale.lease and current.attempts == 2
    assert not store.progress(stale, "rendering", 5, 10)
    store.finish_item(stale, FAILED, "late")
    assert not store.rendered(stale, "/elsewhere/output_001.mp4")
    assert store.rendered(current, "/here/output_001.mp4")
    store.stored(stale, "late-key")  # a late upload's answer
    assert store.job(job.id).items[0].status == STORING
    store.stored(store.job(job.id).items[0], "key")
    assert store.job(job.id).status == SUCCEEDED


def test_lost_items_are_requeued_then_fail_after_most_attempts(store):
    job = new_job(store, items=2)
    for attempt in (1, 2, 3):
        item = store.claim(job.id, 0, lost_after=60)
        assert item.attempts == attempt
        silence(store, 120)
        requeued, failed = store.requeue_lost(60, most_attempts=3)
        assert (requeued, failed) == ((1, 0) if attempt < 3 else (0, 1))
    item = store.job(job.id).items[0]
    assert item.status == FAILED and "3 times" in item.error
    assert store.job(job.id).items[1].status == QUEUED


def test_a_live_worker_keeps_its_item(store):
    job = new_job(store)
    item = store.claim(job.id, 0, lost_after=60)
    silence(store, 30)
    store.heartbeat([item.lease])
    assert store.requeue_lost(60, most_attempts=3) == (0, 0)


def test_dispatch_marks_only_what_is_still_waiting(store):
    job = new_job(store, items=2)
    batch = store.undispatched_items(10)
    assert [(j, i) for j, i, _ in batch] == [(job.id, 0), (job.id, 1)]
    claimed = store.claim(job.id, 0, lost_after=60)  # claimed and given back while the batch was sent
    store.release(claimed)
    store.dispatched(batch)
    assert [(j, i) for j, i, _ in store.undispatched_items(10)] == [(job.id, 0)]
    assert store.in_flight_items() == 1  # sent and still queued
    assert store.redispatch() == 1 and len(store.undispatched_items(10)) == 2


def test_a_sqlite_file_from_before_alembic_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as PRAGMA user_version 1 left it, with a job
        db.executescript("""
            CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
                started REAL, finished REAL, audio_url TEXT NOT NULL, callback_url TEXT, metadata TEXT,
                zip INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT, request_hash TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL);
            CREATE TABLE items (job_id TEXT NOT NULL, idx INTEGER NOT NULL, template TEXT NOT NULL, status TEXT NOT NULL,
                error TEXT, output TEXT, stage TEXT, frames_done INTEGER NOT NULL DEFAULT 0,
                frames_total INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL, seq INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx));
            CREATE TABLE revoked (jti TEXT PRIMARY KEY, revoked REAL NOT NULL);
            CREATE TABLE templates (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
                status TEXT NOT NULL, reason TEXT, width INTEGER, height INTEGER, fps REAL, duration REAL,
                faces INTEGER, thumbnail TEXT, created REAL NOT NULL);
            INSERT INTO jobs (id, tenant, status, created, audio_url, seq) VALUES ('j1', 'acme', 'queued', 1, 'upload:u1', 1);
            INSERT INTO items (job_id, idx, template, status, seq) VALUES ('j1', 0, 'http://t', 'queued', 1);
            PRAGMA user_version = 1;""")
    store = Store(f"sqlite:///{path}")
    job = store.job("j1")
    assert (job.audio_upload, job.audio_url, job.archive_state) == ("u1", "", None)
    assert store.claim("j1", 0, lost_after=60).attempts == 1
    assert sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)


def test_one_dispatcher_leads_and_another_takes_over(store, tmp_path):
    if store.db.sqlite:
        assert store.db.leader(1).held()  # one process: it leads
        return
    other = Store(str(store.db.url.render_as_string(hide_password=False)))
    first, second = store.db.leader(7), other.db.leader(7)
    assert first.held() and not second.held()
    assert first.held()  # still, on its kept connection
    first.release()  # its process died
    assert second.held()
    second.release()
    other.db.close()
