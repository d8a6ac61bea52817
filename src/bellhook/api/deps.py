"""FastAPI dependencies: the runtime of this app, and who is calling."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bellhook.api.ratelimit import ApiRateLimits
from bellhook.domain.models import Principal
from bellhook.errors import AuthenticationFailed, PermissionDenied
from bellhook.runtime import Runtime

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `bellhook keys create`, sent as `Authorization: Bearer <key>`.",
)


async def runtime(request: Request) -> Runtime:  # async: a sync one costs a thread hop
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def principal(
    request: Request,
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise AuthenticationFailed("the Authorization header must be 'Bearer <api key>'")
        raise AuthenticationFailed("an API key is required: send 'Authorization: Bearer <key>'")
    caller = await rt.keys.authenticate(credentials.credentials)
    limits: ApiRateLimits = request.app.state.rate_limits
    limits.check(caller, time.monotonic())  # after authentication: per key, never per guess
    return caller


PrincipalDep = Annotated[Principal, Depends(principal)]


async def admin(caller: PrincipalDep) -> Principal:
    if not caller.is_admin:
        raise PermissionDenied("this route needs an admin API key")
    return caller


AdminDep = Annotated[Principal, Depends(admin)]


async def authenticate_early(request: Request) -> None:
    """Run the matched route's key check (``principal``, and ``admin`` where it needs
    one) by hand, for a request FastAPI turned down before its dependencies ran.

    Raises what the dependency would have raised; does nothing on an open route.
    """
    route = request.scope.get("route")
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
    calls = set()
    while stack:
        dependency = stack.pop()
        calls.add(dependency.call)
        stack.extend(dependency.dependencies)
    if principal not in calls:
        return
    caller = await principal(request, await runtime(request), await _bearer(request))
    if admin in calls:
        await admin(caller)
