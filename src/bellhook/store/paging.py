"""Keyset pages over ``(created_at, id)``, newest first, for the repositories' lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, Table, tuple_

from bellhook.domain.paging import Cursor, Page

T = TypeVar("T")


def newest_first(
    query: Select[Any], table: Table, *, limit: int, cursor: Cursor | None
) -> Select[Any]:
    """``query`` newest first, from after ``cursor``, one row past ``limit``: that row
    tells whether a next page exists."""
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        keys = tuple_(table.c.created_at, table.c.id)
        query = query.where(keys < tuple_(cursor.created_at, cursor.id))
    return query


def page_of(rows: Sequence[Row[Any]], limit: int, item: Callable[[Row[Any]], T]) -> Page[T]:
    """The page of ``rows`` (fetched by a ``newest_first`` query) and its next cursor."""
    assert limit >= 1  # the API's limits start at 1
    items = [item(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(items, Cursor(last.created_at, last.id).encode() if last is not None else None)
