"""Timestamps as bellhook writes them: ISO 8601, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(value: datetime) -> str:
    """``2024-01-01T00:00:00.000Z``, what JavaScript's ``toISOString()`` writes."""
    if value.tzinfo is not UTC:  # what the store gives back is UTC already
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" → "Z"
