"""Where things live under the service's folders. Every such path is built by `under`, which takes
names (never paths) and refuses any that could leave its root or hide a file."""
from __future__ import annotations

import os
import re

from engine.pipeline import output_name

# One folder or file name: no separators, no leading dot (so never '.', '..' or a hidden file).
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def under(root: str, *names: str) -> str:
    """`root`/name/name/..., refused (ValueError) unless every part is a plain name and the result,
    symbolic links resolved, stays inside `root`."""
    for name in names:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain file name")
    path = os.path.join(root, *names)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ValueError(f"{os.path.join(*names)!r} leads out of its folder")
    return path


def data(settings, *names: str) -> str:
    return under(settings.data_dir, *names)


def upload(settings, upload_id: str) -> str:
    """A narration sent with a job."""
    return data(settings, "uploads", upload_id)


def template_dir(settings, tenant: str, template_id: str) -> str:
    return data(settings, "templates", tenant, template_id)


def template_file(settings, tenant: str, template_id: str, name: str) -> str:
    """`source` (the file as uploaded) or `thumbnail.jpg`."""
    return data(settings, "templates", tenant, template_id, name)


def work_dir(settings, job_id: str) -> str:
    """Files a job downloaded (narration, templates), kept while it runs."""
    return data(settings, "work", job_id)


def work_file(settings, job_id: str, name: str) -> str:
    return data(settings, "work", job_id, name)


def template_cache(settings) -> str:
    return data(settings, "template-cache")


def job_outputs(settings, tenant: str, job_id: str) -> str:
    return under(settings.outputs_dir, tenant, job_id)


def archive(settings, tenant: str, job_id: str) -> str:
    """A finished job's ZIP: outputs/<tenant>/<job>/<job>.zip."""
    return under(settings.outputs_dir, tenant, job_id, f"{job_id}.zip")


def output(settings, tenant: str, job_id: str, index: int) -> str:
    """The `index`-th video of a job (from 0): outputs/<tenant>/<job>/output_001.mp4, ..."""
    return under(settings.outputs_dir, tenant, job_id, output_name(index))
