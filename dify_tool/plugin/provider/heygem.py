from typing import Any

from dify_plugin import ToolProvider
from dify_plugin.errors.tool import ToolProviderCredentialValidationError

from tools.gateway import Gateway, GatewayError


class HeygemProvider(ToolProvider):
    def _validate_credentials(self, credentials: dict[str, Any]) -> None:
        """A call the token must be good for: listing the tenant's templates."""
        try:
            Gateway.from_credentials(credentials).templates()
        except GatewayError as exc:
            raise ToolProviderCredentialValidationError(str(exc)) from exc
