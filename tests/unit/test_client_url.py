"""A service URL the client cannot call is refused when the client is made, with a
message that names it, never later as a traceback from the transport."""

from __future__ import annotations

import pytest

from bellhook.client import Client
from bellhook.client._async import InvalidUrl


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:99999", "no valid port"),
        ("http://[::1", "not a valid URL"),
        ("ftp://127.0.0.1", "http:// or https://"),
        ("http://", "http:// or https://"),
    ],
)
def test_an_unusable_url_is_refused_at_once(url: str, says: str) -> None:
    with pytest.raises(InvalidUrl, match=says):
        Client(url, "a-key")


async def test_a_usable_url_makes_a_client() -> None:
    async with Client("http://127.0.0.1:8080/", "a-key") as client:
        assert client.base_url == "http://127.0.0.1:8080"
