"""The plugin's client of heygem-gateway's API, shared by its tools."""
from __future__ import annotations

from dataclasses import dataclass

import requests

TIMEOUT = (10, 60)  # connect, read: the gateway answers a wait within 55 s


class GatewayError(Exception):
    """What the gateway (or the way to it) said went wrong, in words for the user."""


@dataclass
class Gateway:
    base_url: str
    token: str

    @classmethod
    def from_credentials(cls, credentials: dict) -> "Gateway":
        base_url = (credentials.get("base_url") or "").strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise GatewayError("the gateway URL must start with http:// or https://")
        token = (credentials.get("api_token") or "").strip()
        if not token:
            raise GatewayError("an API token is needed (heygem token create --tenant YOUR_TEAM)")
        return cls(base_url, token)

    def _call(self, method: str, path: str, headers: dict | None = None, **kwargs) -> dict:
        try:
            answer = requests.request(method, self.base_url + path, timeout=TIMEOUT,
                                      headers={"Authorization": f"Bearer {self.token}", **(headers or {})}, **kwargs)
        except requests.RequestException as exc:
            raise GatewayError(f"the gateway at {self.base_url} cannot be reached ({exc.__class__.__name__})") from exc
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("detail") or answer.text
            except ValueError:
                detail = answer.text[:300]
            raise GatewayError(f"the gateway answered {answer.status_code}: {detail}")
        try:
            return answer.json()
        except ValueError as exc:
            raise GatewayError(f"{self.base_url} did not answer like heygem-gateway (is the URL right?)") from exc

    def templates(self) -> list[dict]:
        return self._call("GET", "/api/v1/templates")["templates"]

    def submit(self, templates: list[str], audio_url: str | None = None, audio: tuple[str, bytes, str] | None = None,
               zip_: bool = False, metadata: str | None = None, callback_url: str | None = None,
               idempotency_key: str | None = None) -> dict:
        """A new job: the narration as a URL, or as (file name, bytes, content type)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if audio is not None:
            fields = [("templates", t) for t in templates] + [("zip", "true" if zip_ else "false")]
            fields += [(k, v) for k, v in (("metadata", metadata), ("callback_url", callback_url)) if v]
            return self._call("POST", "/api/v1/jobs", data=fields, files={"audio": audio}, headers=headers)
        body = {"audio_url": audio_url, "templates": templates, "zip": zip_}
        if metadata:
            body["metadata"] = metadata
        if callback_url:
            body["callback_url"] = callback_url
        return self._call("POST", "/api/v1/jobs", json=body, headers=headers)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/api/v1/jobs/{requests.utils.quote(job_id, safe='')}")

    def fetch(self, url: str, max_bytes: int) -> bytes | None:
        """A finished video's bytes (a gateway or object-store link), None when over `max_bytes`."""
        with requests.get(url, timeout=TIMEOUT, stream=True) as answer:
            answer.raise_for_status()
            if int(answer.headers.get("Content-Length") or 0) > max_bytes:
                return None
            data = bytearray()
            for chunk in answer.iter_content(1 << 16):
                data += chunk
                if len(data) > max_bytes:
                    return None
            return bytes(data)


def resolve_templates(gateway: Gateway, text: str, chosen: str | None = None) -> list[str]:
    """Template ids or URLs from what the user gave: ids (tpl_...), URLs, or names from the
    library (case-insensitive), separated by commas, spaces or new lines; plus one chosen from
    the library's list."""
    wanted = [chosen] if chosen else []
    library = None
    for token in [t.strip() for t in text.replace(",", "\n").splitlines() if t.strip()] if text else []:
        if token.startswith(("tpl_", "http://", "https://")):
            wanted.append(token)
            continue
        if library is None:
            library = {t["name"].lower(): t for t in gateway.templates() if t["status"] == "ready"}
            library.update({t["name"].rsplit(".", 1)[0].lower(): t for t in list(library.values())})
        match = library.get(token.lower())
        if match is None:
            names = ", ".join(sorted({t["name"] for t in library.values()})) or "none uploaded yet"
            raise GatewayError(f"no ready template named {token!r}; the library has: {names}")
        wanted.append(match["id"])
    if not wanted:
        raise GatewayError("choose at least one template (a name from the library, an id or a URL)")
    return list(dict.fromkeys(wanted))


ATTACH_LIMIT = 50 * 2**20  # Dify keeps a tool's files up to 50 MiB by default


def progress_line(job: dict) -> str:
    progress = job["progress"]
    return (f"{job['status'].capitalize()}: {progress['items_done']} of {progress['items_total']} videos done, "
            f"{progress['percent']:g}% ({progress['stage']})")


def result_messages(tool, gateway: Gateway, job: dict, attach: bool):
    """What a tool answers about a job: the text to tell the user, the job as JSON, a link per
    video (and the ZIP's), and the MP4s themselves as files when asked and small enough."""
    yield tool.create_text_message(job["text"])
    yield tool.create_json_message(job)
    for url in job["video_urls"] + ([job["archive_url"]] if job.get("archive_url") else []):
        yield tool.create_link_message(url)
    if not attach:
        return
    for item in job["items"]:
        if not item["video_url"]:
            continue
        data = gateway.fetch(item["video_url"], ATTACH_LIMIT)
        if data is None:
            yield tool.create_text_message(f"\nVideo {item['index'] + 1} is over 50 MB: use its link.")
            continue
        yield tool.create_blob_message(data, meta={"mime_type": "video/mp4",
                                                   "filename": f"heygem-{job['id'][:8]}-{item['index'] + 1:03d}.mp4"})
