from collections.abc import Generator

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

from tools.gateway import Gateway, GatewayError


class ListTemplatesTool(Tool):
    def _invoke(self, tool_parameters: dict) -> Generator[ToolInvokeMessage, None, None]:
        try:
            templates = Gateway.from_credentials(self.runtime.credentials).templates()
        except GatewayError as exc:
            raise ValueError(str(exc)) from exc
        ready = [t for t in templates if t["status"] == "ready"]
        lines = [f"- {t['name']} ({t['id']})" for t in ready] or ["No templates yet: upload some on the gateway."]
        yield self.create_text_message(f"{len(ready)} ready template{'s' if len(ready) != 1 else ''}:\n" + "\n".join(lines))
        yield self.create_json_message({"templates": templates})
