"""The gateway's side of HEYGEM_QUEUE=celery: queued items are sent to the workers' queue, and the
database stays the truth about them.

- One gateway of several dispatches at a time (a PostgreSQL advisory lock; another takes over
  within a round when it dies). A queued item is sent when it is not marked sent, and marked
  once Redis took the task; a task delivered twice is still claimed once.
- A claimed item whose worker has been silent for HEYGEM_WORKER_LOST_SECONDS (killed, or cut
  off) goes back to the queue and is sent again; one that did so HEYGEM_MAX_ATTEMPTS times
  fails. Not while this gateway has itself only just reached the database again: the workers'
  heartbeats were held back by the same outage.
- Every HEYGEM_DISPATCH_CHECK_SECONDS, the tasks Redis holds (waiting or unacknowledged) are
  counted against the items that should have one; fewer on two checks in a row (Redis restarted
  empty, or was flushed) and every queued item is sent again. A task that is sent twice is
  harmless: it is claimed once (tasks.py)."""
from __future__ import annotations

import logging
import threading
import time

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from .database import DISPATCH_LOCK
from .store import Store
from .tasks import RENDER

log = logging.getLogger("heygem.dispatch")
BATCH = 200
BROKER_AWAY = (OSError, OperationalError, RedisError)


class Dispatcher:
    def __init__(self, settings, store: Store, app):
        self.settings, self.store, self.app = settings, store, app
        self.short_before = False  # the last check found Redis holding fewer tasks than it should
        self.next_check = 0.0
        self.broker_reachable: bool | None = None  # at the last round (None: not asked yet); for /readyz
        self.database_since = time.monotonic()  # since when every round reached the database
        self.leadership = store.db.leader(DISPATCH_LOCK)
        self.leading = False  # this gateway dispatches (for /readyz)

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.leading = self.leadership.held()
                if not self.leading:
                    self.database_since = time.monotonic()  # counts from when this one leads
                    wake.wait(1.0)
                    wake.clear()
                    continue
                self.send_once()
                if time.monotonic() >= self.next_check:
                    self.next_check = time.monotonic() + self.settings.dispatch_check_seconds
                    self.check_once()
                self.broker_reachable = True
            except BROKER_AWAY as exc:  # Redis is away: tried again
                if self.broker_reachable is not False:
                    log.warning("task broker unreachable", extra={"event": "dispatch", "error": str(exc)})
                self.broker_reachable = False
            except DBAPIError as exc:
                log.warning("database unreachable", extra={"event": "dispatch", "error": str(exc).splitlines()[0]})
                self.database_since = time.monotonic()
            except Exception:  # noqa: BLE001 - a fault: logged, tried again
                log.exception("dispatch round failed")
            wake.wait(1.0)
            wake.clear()
        self.leadership.release()

    def send_once(self) -> int:
        sent = 0
        while batch := self.store.undispatched_items(BATCH):
            with self.app.producer_or_acquire() as producer:
                for job_id, index, _ in batch:
                    self.app.send_task(RENDER, args=[job_id, index], queue=self.settings.render_queue,
                                       producer=producer)
            self.store.dispatched(batch)
            sent += len(batch)
        return sent

    def check_once(self) -> None:
        if time.monotonic() - self.database_since >= self.settings.worker_lost_seconds:
            lost, failed = self.store.requeue_lost(self.settings.worker_lost_seconds, self.settings.max_attempts)
            if lost or failed:
                log.warning("items of silent workers requeued", extra={"event": "requeue", "items": lost,
                                                                        "failed": failed})
        expected = self.store.in_flight_items()
        held = self.held_by_broker()
        short = held < expected
        if short and self.short_before:
            resent = self.store.redispatch()
            log.warning("the broker lost tasks; queued items are sent again",
                        extra={"event": "redispatch", "expected": expected, "held": held, "items": resent})
            short = False
        self.short_before = short

    def held_by_broker(self) -> int:
        """Tasks Redis holds for this queue: waiting in its list, or delivered and unacknowledged
        (those are counted over all queues: a surplus, never a shortfall)."""
        with self.app.connection_for_read() as connection:
            channel = connection.default_channel
            client = channel.client
            return client.llen(self.settings.render_queue) + client.hlen(channel.unacked_key)
