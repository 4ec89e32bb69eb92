import time
from collections.abc import Generator

from dify_plugin import Tool
from dify_plugin.entities import I18nObject, ParameterOption
from dify_plugin.entities.tool import ToolInvokeMessage

from tools.gateway import Gateway, GatewayError, progress_line, resolve_templates, result_messages

POLL_SECONDS = 2.0
# The plugin daemon ends a tool call 600 s after it starts (PLUGIN_MAX_EXECUTION_TIMEOUT):
# answer before that with what there is.
MAX_WAIT_SECONDS = 540


class MakeVideosTool(Tool):
    def _invoke(self, tool_parameters: dict) -> Generator[ToolInvokeMessage, None, None]:
        started = time.monotonic()
        try:
            gateway = Gateway.from_credentials(self.runtime.credentials)
            templates = resolve_templates(gateway, tool_parameters.get("templates") or "", tool_parameters.get("template"))
            narration, url = tool_parameters.get("narration"), (tool_parameters.get("narration_url") or "").strip()
            if narration is None and not url:
                raise GatewayError("give the narration as a file (for example a TTS tool's output) or as a URL")
            audio = None
            if narration is not None:  # its URL is Dify's, maybe unreachable from the gateway: send the bytes
                audio = (narration.filename or "narration", narration.blob, narration.mime_type or "application/octet-stream")
            job = gateway.submit(templates, audio_url=None if audio else url, audio=audio,
                                 zip_=bool(tool_parameters.get("zip")), metadata=tool_parameters.get("metadata") or None,
                                 callback_url=(tool_parameters.get("callback_url") or "").strip() or None)
        except GatewayError as exc:
            raise ValueError(str(exc)) from exc
        yield self.create_text_message(f"Making {len(templates)} presenter video{'s' if len(templates) != 1 else ''} "
                                       f"(job {job['id']})...\n")
        wait = min(float(tool_parameters.get("wait_seconds") or MAX_WAIT_SECONDS), MAX_WAIT_SECONDS)
        last = None
        while job["status"] in ("queued", "running") and time.monotonic() - started < wait:
            time.sleep(POLL_SECONDS)
            try:
                job = gateway.job(job["id"])
            except GatewayError as exc:
                yield self.create_text_message(f"(could not check the job: {exc}; trying again)\n")
                continue
            line = progress_line(job)
            if line != last:
                yield self.create_text_message(line + "\n")
                last = line
        yield from result_messages(self, gateway, job, attach=bool(tool_parameters.get("attach_videos", True)))

    def _fetch_parameter_options(self, parameter: str) -> list[ParameterOption]:
        """The library's ready templates, for the `template` select."""
        if parameter != "template":
            return []
        templates = Gateway.from_credentials(self.runtime.credentials).templates()
        return [ParameterOption(value=t["id"], label=I18nObject(en_US=t["name"], zh_Hans=t["name"]))
                for t in templates if t["status"] == "ready"]
