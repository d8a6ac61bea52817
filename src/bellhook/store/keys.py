"""API keys: issue, look up for authentication, list, revoke."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select, update

from bellhook.domain.credentials import (
    IssuedKey,
    hash_token,
    issue_key,
    key_id_of,
)
from bellhook.domain.models import ApiKey, Principal
from bellhook.errors import AuthenticationFailed, NotFound, StorageUnavailable
from bellhook.store.database import Database
from bellhook.store.rows import to_api_key
from bellhook.store.tables import api_keys

log = structlog.get_logger("bellhook.store")

# Keys that authenticated recently, by token digest: a publisher sending thousands of
# events a second would otherwise pay a database read per call. A key revoked by
# another process (the CLI) is refused within AUTH_CACHE_SECONDS; by this one, at once.
AUTH_CACHE_SECONDS = 1.0
AUTH_CACHE_SIZE = 10_000
# ``last_used_at`` is written at most this often per key: a write per call would cost
# more than the call, and "used in the last minute" is what an operator asks.
LAST_USED_EVERY = timedelta(minutes=1)


class KeyRepository:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))
        self._recent: dict[str, tuple[Principal, float]] = {}

    async def create(
        self, owner_id: str, *, is_admin: bool, name: str | None, now: datetime
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it with its token, which is never stored in clear."""
        issued: IssuedKey = issue_key()
        async with self.db.write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=issued.key_id,
                    owner_id=owner_id,
                    is_admin=is_admin,
                    name=name,
                    key_hash=issued.key_hash,
                    created_at=now,
                )
            )
        key = ApiKey(issued.key_id, owner_id, is_admin, name, now, None, None)
        return key, issued.token

    async def authenticate(self, token: str) -> Principal:
        key_id = key_id_of(token)
        digest = hash_token(token)
        cached = self._recent.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        api_keys.c.owner_id,
                        api_keys.c.is_admin,
                        api_keys.c.key_hash,
                        api_keys.c.revoked_at,
                        api_keys.c.last_used_at,
                    ).where(api_keys.c.id == key_id)
                )
            ).first()
        if row is None or not hmac.compare_digest(digest, row.key_hash):
            raise AuthenticationFailed("the API key is not valid")
        if row.revoked_at is not None:
            raise AuthenticationFailed("the API key has been revoked")
        now = self.clock()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
            try:
                async with self.db.write() as conn:
                    await conn.execute(
                        update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now)
                    )
            except StorageUnavailable:  # bookkeeping: never the reason a call fails
                log.warning("api_key.last_used_not_saved", key_id=key_id)
        caller = Principal(key_id=key_id, owner_id=row.owner_id, is_admin=bool(row.is_admin))
        if len(self._recent) >= AUTH_CACHE_SIZE:
            self._recent.clear()
        self._recent[digest] = (caller, time.monotonic() + AUTH_CACHE_SECONDS)
        return caller

    async def list(self, owner_id: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
        if owner_id is not None:
            query = query.where(api_keys.c.owner_id == owner_id)
        async with self.db.read() as conn:
            return [to_api_key(r) for r in (await conn.execute(query)).all()]

    async def revoke(self, key_id: str, *, now: datetime) -> None:
        try:
            await self._revoke(key_id, now=now)
        finally:
            # After the commit: an authentication racing with it cannot re-cache the key.
            self._recent = {d: v for d, v in self._recent.items() if v[0].key_id != key_id}

    async def _revoke(self, key_id: str, *, now: datetime) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                exists = (
                    await conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id))
                ).first()
                if exists is None:
                    raise NotFound(f"no API key with id {key_id!r}")
