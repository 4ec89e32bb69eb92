"""Result callbacks: when a job ends, its outcome is POSTed as JSON to its `callback_url`.

Deliveries are an outbox in the store, written by the transaction that ends the job. The
deliverer sends them at least once, in order per job, signed the way webhook senders sign
(Stripe's scheme):

    X-Heygem-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

with the tenant's signing secret (a second v1, with the previous secret, for a day after a
rotation). Connection errors, timeouts, 5xx, 408 and 429 (honouring Retry-After) are retried with
exponential backoff and jitter for HEYGEM_CALLBACK_RETRY_HOURS; any other answer stops. The body
is made again at every attempt (fresh links, the same delivery id); a redelivery is a new
delivery.

The body's keys are flat: Dify's webhook trigger maps the top-level keys of a JSON body to
workflow variables one by one."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

from . import backoff
from .problems import fault_id
from .store import DELIVERED, FAILED, PENDING, SUCCEEDED, Delivery, Job, Store
from .urlpolicy import OutboundError, RefusedURL, Unresolvable, UrlPolicy

log = logging.getLogger("heygem.callbacks")
SIGNATURE_HEADER, DELIVERY_HEADER, EVENT_HEADER = "X-Heygem-Signature", "X-Heygem-Delivery", "X-Heygem-Event"
TOLERANCE_SECONDS = 300          # receivers should refuse signatures older than this (README)
PREVIOUS_SECRET_SECONDS = 86400  # after a rotation, the old secret signs too for this long
RETRIED_STATUSES = (408, 429)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(store: Store, tenant: str, timestamp: int, body: bytes) -> str:
    secret, previous, rotated = store.signing_secret(tenant)
    parts = [f"t={timestamp}", f"v1={signature(secret, timestamp, body)}"]
    if previous and rotated and time.time() - rotated < PREVIOUS_SECRET_SECONDS:
        parts.append(f"v1={signature(previous, timestamp, body)}")
    return ",".join(parts)


def summary(job: Job, video_urls: list[str], archive_url: str | None, percent: float | None = None) -> str:
    """What to tell the user, as a chat bot or an LLM can post it as it is."""
    total, ready = len(job.items), len(video_urls)
    if job.status in ("queued", "running"):
        return (f"The job is still {job.status} ({ready} of {total} videos ready, {percent or 0:g}% done). "
                f"Check it again in a minute with getLipSyncJob and job_id {job.id}.")
    if job.status == "canceled":
        head = f"Canceled: {ready} of {total} videos were made"
    else:
        head = f"{ready} of {total} video{'s' if total != 1 else ''} ready"
    lines = [head + (":" if video_urls or archive_url else ".")]
    lines += video_urls
    if archive_url:
        lines.append(f"All in one ZIP: {archive_url}")
    failed = [item for item in job.items if item.status != SUCCEEDED and item.error]
    lines += [f"Video {item.index + 1} failed: {item.error}" for item in failed[:5]]
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more failed")
    return "\n".join(lines)


def payload(job: Job, links, delivery: Delivery) -> dict:
    """The body. No top-level value is null: Dify's webhook trigger checks each declared
    variable's type (a string variable refuses null), so `archive_url` is "" when there is none,
    `metadata` {} and `started_at` is left out for a job that never started."""
    items = [{"index": item.index, "template": item.template, "status": item.status, "error": item.error,
              "url": links.video(job, item)} for item in job.items]
    video_urls = [item["url"] for item in items if item["url"]]
    archive_url = links.archive(job)
    finished = job.finished or time.time()
    body = {
        "event": delivery.event, "delivery_id": delivery.id, "job_id": job.id, "status": job.status,
        "video_urls": video_urls, "archive_url": archive_url or "", "text": summary(job, video_urls, archive_url),
        "videos_ready": len(video_urls), "videos_total": len(job.items), "items": items,
        "metadata": job.metadata or {}, "created_at": job.created, "finished_at": finished,
        "queued_seconds": round((job.started or finished) - job.created, 3),
        "total_seconds": round(finished - job.created, 3),
    }
    if job.started:
        body["started_at"] = job.started
    return body


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):  # ASCII digits only: str.isdigit() takes '²'
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Deliverer:
    """Sends due deliveries from a thread pool: at most HEYGEM_CALLBACK_CONCURRENCY at once and
    one per tenant, so a receiver that stalls holds back only its own tenant's callbacks; every
    attempt ends within HEYGEM_CALLBACK_TIMEOUT, however slowly the receiver answers."""

    def __init__(self, settings, store: Store, policy: UrlPolicy, links):
        self.settings, self.store, self.policy, self.links = settings, store, policy, links
        self.wakeup = threading.Event()
        self.concurrency = max(1, settings.callback_concurrency)
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="callback")
        self.lock = threading.Lock()
        self.busy: set[str] = set()  # tenants with an attempt in flight

    def wake(self) -> None:
        self.wakeup.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.dispatch()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("delivery round failed")
            due = self.store.next_delivery_at()
            # Due already: it waits for its tenant's attempt in flight, which wakes us when done.
            wait = 1.0 if due is None or due <= time.time() else min(1.0, due - time.time())
            self.wakeup.wait(wait)
            self.wakeup.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def dispatch(self) -> int:
        """Start an attempt for each due delivery there is room for; how many."""
        started = 0
        with self.lock:
            busy, room = set(self.busy), self.concurrency - len(self.busy)
        for delivery in self.store.due_deliveries(time.time(), max(room, 0), busy) if room > 0 else []:
            with self.lock:
                if delivery.tenant in self.busy or len(self.busy) >= self.concurrency:
                    continue
                self.busy.add(delivery.tenant)
            # Claimed in the store: a stale read of a delivery just attempted is not sent again.
            if not self.store.claim_delivery(delivery.id, time.time(), self.settings.callback_timeout + 30):
                with self.lock:
                    self.busy.discard(delivery.tenant)
                continue
            self.pool.submit(self._attempt_guarded, delivery)
            started += 1
        return started

    def _attempt_guarded(self, delivery: Delivery) -> None:
        try:
            self._attempt(delivery)
        except Exception:  # noqa: BLE001 - a fault: logged, and the delivery tried again later
            error_id = fault_id()
            log.exception("callback fault", extra={"event": "callback", "delivery": delivery.id, "error_id": error_id})
            self._retry_later(delivery, None, f"internal error (error id {error_id})", None)
        finally:
            with self.lock:
                self.busy.discard(delivery.tenant)
            self.wake()

    def _attempt(self, delivery: Delivery) -> None:
        job = self.store.job(delivery.job_id)
        if job is None:  # deleted meanwhile: its deliveries went with it
            return
        # Made at every attempt: the links in it are fresh, whenever the receiver comes back.
        body = json.dumps(payload(job, self.links, delivery)).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature_header(self.store, job.tenant, timestamp, body),
                   DELIVERY_HEADER: delivery.id, EVENT_HEADER: delivery.event}
        seconds = self.settings.callback_timeout
        status, error, wait = None, None, None
        try:
            with self.policy.open("POST", delivery.url, headers=headers, body=body, timeout=seconds,
                                  connect_timeout=seconds, deadline=seconds) as response:
                status, wait = response.status, retry_after(response.headers.get("Retry-After"))
        except Unresolvable as exc:  # DNS may come back
            error = str(exc)
        except RefusedURL as exc:  # the name now points inside: never sent
            self._record(delivery, job, FAILED, None, str(exc), None)
            return
        except OutboundError as exc:
            error = str(exc)
        if status is not None and 200 <= status < 300:
            self._record(delivery, job, DELIVERED, status, None, None)
        elif status is not None and status < 500 and status not in RETRIED_STATUSES:
            reason = "redirects are not followed" if 300 <= status < 400 else "not retried"
            self._record(delivery, job, FAILED, status, f"the receiver answered HTTP {status} ({reason})", None)
        else:
            self._retry_later(delivery, status, error or f"the receiver answered HTTP {status}", wait, job)

    def _retry_later(self, delivery: Delivery, status: int | None, error: str, wait: float | None,
                     job: Job | None = None) -> None:
        attempts = delivery.attempts + 1
        next_at = time.time() + max(wait or 0.0, backoff.delay(attempts, self.settings.callback_backoff_seconds,
                                                                self.settings.callback_backoff_max_seconds))
        if next_at - delivery.created > self.settings.callback_retry_hours * 3600:
            self._record(delivery, job, FAILED, status, f"{error}; gave up after {attempts} attempts", None)
        else:
            self._record(delivery, job, PENDING, status, error, next_at)

    def _record(self, delivery: Delivery, job: Job | None, outcome: str, status: int | None, error: str | None,
                next_at: float | None) -> None:
        self.store.delivery_attempted(delivery.id, outcome, status, error, next_at)
        fields = {"event": "callback", "job": delivery.job_id, "tenant": delivery.tenant, "delivery": delivery.id,
                  "attempt": delivery.attempts + 1, "http_status": status, "error": error}
        if job is not None and job.finished:
            fields["seconds_after_job"] = round(time.time() - job.finished, 3)
        log.info("callback " + ("delivered" if outcome == DELIVERED else "failed" if outcome == FAILED else "will retry"),
                 extra=fields)
