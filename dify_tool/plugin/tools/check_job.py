from collections.abc import Generator

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

from tools.gateway import Gateway, GatewayError, result_messages


class CheckJobTool(Tool):
    def _invoke(self, tool_parameters: dict) -> Generator[ToolInvokeMessage, None, None]:
        try:
            gateway = Gateway.from_credentials(self.runtime.credentials)
            job = gateway.job((tool_parameters.get("job_id") or "").strip())
        except GatewayError as exc:
            raise ValueError(str(exc)) from exc
        yield from result_messages(self, gateway, job, attach=bool(tool_parameters.get("attach_videos", False)))
