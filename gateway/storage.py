"""Where finished videos and ZIPs are kept. `LocalStorage`: in the outputs folder, reached by the
service's own signed /download links. `S3Storage`: uploaded to MinIO or any S3 with the minio SDK
(multipart, streamed from disk), reached by the bucket's presigned or public URLs.

The S3 endpoint is the operator's own server, named in the settings: it is trusted as configured
and is not added to the allow-list that user-supplied URLs are checked against (a job could
otherwise read from the company's object store through the service)."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

log = logging.getLogger("heygem.storage")
VIDEO_TYPE, ZIP_TYPE = "video/mp4", "application/zip"


class StorageError(Exception):
    """The object store could not be reached or refused; the message says why (no secrets)."""


class LocalStorage:
    """Files stay where the engine wrote them; nothing to upload."""

    remote = False

    def key(self, tenant: str, job_id: str, name: str) -> None:
        return None

    def put(self, key, path: str, content_type: str) -> None:
        pass

    def url(self, key: str) -> None:
        return None  # an object stored while HEYGEM_STORAGE was s3: no link without the bucket

    def remove_job(self, tenant: str, job_id: str) -> None:
        pass

    def check(self) -> None:
        pass


def _endpoint(text: str, secure: bool) -> tuple[str, bool]:
    """(host:port, TLS) from `host:port` or `http(s)://host:port`."""
    if "://" not in text:
        return text.strip().rstrip("/"), secure
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ValueError(f"the S3 endpoint must be host:port or http(s)://host:port, not {text!r}")
    return parts.netloc, parts.scheme == "https"


def _describe(exc: Exception) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        exc = exc.reason or exc
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:300]


class S3Storage:
    remote = True

    def __init__(self, settings):
        self.bucket, self.prefix = settings.s3_bucket, settings.s3_prefix
        self.part_size = settings.s3_part_mb * 2**20
        self.links, self.link_ttl = settings.s3_links, timedelta(seconds=settings.s3_link_ttl)
        self.public_url = settings.s3_public_url.rstrip("/")
        endpoint, secure = _endpoint(settings.s3_endpoint, settings.s3_secure)
        self.endpoint = endpoint
        # Short connect timeout and a few quick retries: a down store shows up in /readyz within
        # seconds, and uploads are retried with longer backoff by the publisher.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60), maxsize=8, cert_reqs="CERT_REQUIRED",
            ca_certs=settings.s3_ca_bundle or certifi.where(),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)))
        credentials = dict(access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                           region=settings.s3_region)
        self.client = Minio(endpoint, secure=secure, http_client=http, **credentials)
        # /readyz asks with a client that gives up within seconds, at most once a second, one
        # probe at a time: probes cannot pile up on a store that accepts and never answers.
        probe = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=3), retries=False, maxsize=1,
                                    cert_reqs="CERT_REQUIRED", ca_certs=settings.s3_ca_bundle or certifi.where())
        self.prober = Minio(endpoint, secure=secure, http_client=probe, **credentials)
        self.probe_lock = threading.Lock()
        self.health: tuple[float, str | None] = (0.0, None)  # (when asked, what went wrong)
        # Presigned links carry the host users reach the store by, which may not be the one the
        # service uses (minio:9000 inside, files.example.com outside). Signing is local: with the
        # region set, no request is made.
        signer_endpoint, signer_secure = endpoint, secure
        if self.links == "presigned" and self.public_url:
            signer_endpoint, signer_secure = _endpoint(self.public_url, secure)
        self.signer = Minio(signer_endpoint, secure=signer_secure, **credentials)
        self.bucket_ready = threading.Event()

    def key(self, tenant: str, job_id: str, name: str) -> str:
        """<prefix>/<tenant>/<job>/<name> (tenant and job are checked names; name is ours)."""
        return "/".join(filter(None, (self.prefix, tenant, job_id, name)))

    def _ensure_bucket(self) -> None:
        if self.bucket_ready.is_set():
            return
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self.bucket_ready.set()

    def put(self, key: str, path: str, content_type: str) -> None:
        """Upload `path` as `key` (multipart above one part, read from disk a part at a time),
        then confirm the object is there with the file's size. StorageError otherwise."""
        size = os.path.getsize(path)
        for attempt in (1, 2):
            try:
                self._ensure_bucket()
                self.client.fput_object(self.bucket, key, path, content_type=content_type, part_size=self.part_size,
                                        num_parallel_uploads=2)
                stored = self.client.stat_object(self.bucket, key).size
                break
            except S3Error as exc:
                if exc.code == "NoSuchBucket" and attempt == 1:  # removed behind our back, or a store that lost its data
                    self.bucket_ready.clear()
                    continue
                raise StorageError(f"could not store {key}: {_describe(exc)}") from exc
            except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                raise StorageError(f"could not store {key}: {_describe(exc)}") from exc
        if stored != size:
            raise StorageError(f"could not store {key}: the store holds {stored} bytes of {size}")

    def get(self, key: str, path: str) -> None:
        """Download `key` to `path` (it appears whole or not at all). FileNotFoundError when there
        is no such object, StorageError when the store cannot be read."""
        try:
            # A temporary name of this call's own: the SDK's default is shared by concurrent calls.
            self.client.fget_object(self.bucket, key, path, tmp_file_path=f"{path}.{uuid.uuid4().hex}.part")
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                raise FileNotFoundError(key) from exc
            raise StorageError(f"could not read {key}: {_describe(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"could not read {key}: {_describe(exc)}") from exc

    def remove(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"could not remove {key}: {_describe(exc)}") from exc

    def url(self, key: str) -> str:
        if self.links == "public":
            return f"{self.public_url}/{quote(key)}"
        return self.signer.presigned_get_object(self.bucket, key, expires=self.link_ttl)

    def remove_job(self, tenant: str, job_id: str) -> None:
        """Every object of the job. StorageError when the store cannot be reached."""
        prefix = self.key(tenant, job_id, "")
        try:
            names = [DeleteObject(o.object_name) for o in self.client.list_objects(self.bucket, prefix, recursive=True)]
            errors = list(self.client.remove_objects(self.bucket, names)) if names else []
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return
            raise StorageError(f"could not remove {prefix}: {_describe(exc)}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"could not remove {prefix}: {_describe(exc)}") from exc
        if errors:
            raise StorageError(f"could not remove {errors[0].name}: {errors[0].code}")

    def check(self) -> None:
        """StorageError unless the store answered lately. The message names no host: /readyz
        is public; the log has the details."""
        if self.probe_lock.acquire(blocking=False):
            try:
                if time.monotonic() - self.health[0] >= 1.0:
                    error = None
                    try:
                        self.prober.bucket_exists(self.bucket)
                    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                        error = _describe(exc)
                        log.warning("object storage unreachable", extra={"event": "storage", "error": error,
                                                                         "endpoint": self.endpoint})
                    self.health = (time.monotonic(), error)
            finally:
                self.probe_lock.release()
        if self.health[1] is not None:
            raise StorageError("object storage is unreachable")


def from_settings(settings):
    return S3Storage(settings) if settings.storage == "s3" else LocalStorage()
