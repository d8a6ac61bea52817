"""bellhook: the webhook delivery service of Bellamy Book."""

from __future__ import annotations

__version__ = "0.1.0"
