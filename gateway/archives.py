"""A finished job's ZIP: its videos (stored, not deflated: MP4s do not compress) and a manifest
that lists every item, failed ones too. Made once, into the job's folder, then sent as a file:
a client that reads slowly holds a socket, not a server thread."""
from __future__ import annotations

import json
import os
import threading
import zipfile

from . import paths
from .store import QUEUED, RUNNING, SUCCEEDED, Job

_building = threading.Lock()


class Unfinished(Exception):
    """The job still runs; its ZIP is made when it ends."""


def archive(settings, job: Job) -> str:
    """The path of the job's ZIP, made now if it was not yet."""
    if job.status in (QUEUED, RUNNING):
        raise Unfinished(job.id)
    path = paths.archive(settings, job.tenant, job.id)
    with _building:
        if os.path.exists(path):
            return path
        manifest = {"job": job.id, "status": job.status, "metadata": job.metadata, "items": []}
        partial = path + ".part"
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as bundle:
            for item in job.items:
                video = paths.output(settings, job.tenant, job.id, item.index)
                entry = {"index": item.index, "template": item.template, "status": item.status,
                         "error": item.error, "file": None}
                if item.status == SUCCEEDED and os.path.isfile(video):
                    entry["file"] = os.path.basename(video)  # output_001.mp4: never a caller's name
                    bundle.write(video, entry["file"])
                manifest["items"].append(entry)
            bundle.writestr("manifest.json", json.dumps(manifest, indent=2))
        os.replace(partial, path)
    return path
