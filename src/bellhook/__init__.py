"""bellhook: the webhook delivery service of Bellamy Book."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ApiError", "Client", "SyncClient", "__version__"]

if TYPE_CHECKING:
    from bellhook.client import ApiError, Client, SyncClient

# The API client is imported on first use (module __getattr__), so that `import bellhook`
# in the service and the worker does not import httpx.
_CLIENT_NAMES = frozenset({"ApiError", "Client", "SyncClient"})


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from bellhook import client

        return getattr(client, name)
    raise AttributeError(f"module 'bellhook' has no attribute {name!r}")
