"""Keyset pagination: opaque cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from bellhook.domain.ids import is_wellformed
from bellhook.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT, MAX_LIMIT = 50, 250


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            created_at, item_id = json.loads(raw)
            when = datetime.fromisoformat(created_at)
            if when.tzinfo is None:
                raise ValueError("naive timestamp")
            cursor = cls(when.astimezone(UTC), str(item_id))
            if not is_wellformed(cursor.id) or not 1970 <= cursor.created_at.year < 9999:
                raise ValueError("not a cursor bellhook made")
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
            raise InvalidInput(
                "cursor is not valid: pass the nextCursor of a previous page unchanged",
                details=[{"field": "cursor"}],
            ) from exc
        return cursor


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
