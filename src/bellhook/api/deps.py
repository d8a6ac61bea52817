"""FastAPI dependencies: the runtime of this app, and who is calling."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from bellhook.api.ratelimit import ApiRateLimits
from bellhook.domain.models import Principal
from bellhook.errors import AuthenticationFailed, PermissionDenied
from bellhook.runtime import Runtime


async def runtime(request: Request) -> Runtime:  # async: a sync one costs a thread hop
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


class ApiKeyAuth(HTTPBearer):
    """Who is calling: the API key's principal (an admin's, with ``admin=True``).

    One dependency rather than a chain (bearer token -> principal -> admin): each
    dependency FastAPI solves costs about 4% of an ingest call's instructions, and
    this runs on every call. As an ``HTTPBearer``, it is still the API's documented
    security scheme (``ApiKey``).
    """

    def __init__(self, *, admin: bool) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="ApiKey",
            description=(
                "An API key from `bellhook keys create`, sent as `Authorization: Bearer <key>`."
            ),
        )
        self.admin = admin

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None:
            if request.headers.get("authorization"):
                raise AuthenticationFailed("the Authorization header must be 'Bearer <api key>'")
            raise AuthenticationFailed("an API key is required: send 'Authorization: Bearer <key>'")
        rt = await runtime(request)
        caller = await rt.keys.authenticate(credentials.credentials)
        limits: ApiRateLimits = request.app.state.rate_limits
        limits.check(caller, time.monotonic())  # after authentication: per key, never per guess
        if self.admin and not caller.is_admin:
            raise PermissionDenied("this route needs an admin API key")
        return caller


principal = ApiKeyAuth(admin=False)
PrincipalDep = Annotated[Principal, Depends(principal)]
admin = ApiKeyAuth(admin=True)
AdminDep = Annotated[Principal, Depends(admin)]


async def authenticate_early(request: Request) -> None:
    """Run the matched route's key check (``admin`` or ``principal``) by hand, for a
    request FastAPI turned down before its dependencies ran.

    Raises what the dependency would have raised; does nothing on an open route.
    """
    route = request.scope.get("route")
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
    calls = set()
    while stack:
        dependency = stack.pop()
        calls.add(dependency.call)
        stack.extend(dependency.dependencies)
    for auth in (admin, principal):  # an admin route's check is the stricter one
        if auth in calls:
            await auth(request)
            return
