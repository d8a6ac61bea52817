"""The event catalog: the Bellamy Book events a webhook can subscribe to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bellhook.errors import InvalidInput, UnknownEventType

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    description: str
    example: Mapping[str, Any]


_EVENT_TYPES = (
    EventType(
        "post.created",
        "A user published a new post.",
        {
            "id": "post_8f14e45f",
            "content": "Hello, Bellamy Book!",
            "authorId": "user_c4ca4238",
            "visibility": "public",
            "createdAt": "2024-01-01T00:00:00Z",
        },
    ),
    EventType(
        "post.updated",
        "A user edited the content or visibility of a post.",
        {
            "id": "post_8f14e45f",
            "content": "Hello again, Bellamy Book!",
            "authorId": "user_c4ca4238",
            "visibility": "friends",
            "updatedAt": "2024-01-01T00:05:00Z",
        },
    ),
    EventType(
        "post.deleted",
        "A post was deleted by its author or a moderator.",
        {"id": "post_8f14e45f", "authorId": "user_c4ca4238", "deletedAt": "2024-01-01T00:10:00Z"},
    ),
    EventType(
        "comment.created",
        "A user commented on a post.",
        {
            "id": "comment_a87ff679",
            "postId": "post_8f14e45f",
            "authorId": "user_eccbc87e",
            "content": "Nice post!",
            "createdAt": "2024-01-01T00:01:00Z",
        },
    ),
    EventType(
        "reaction.added",
        "A user reacted to a post or a comment.",
        {
            "id": "reaction_e4da3b7f",
            "targetType": "post",
            "targetId": "post_8f14e45f",
            "userId": "user_eccbc87e",
            "reaction": "like",
            "createdAt": "2024-01-01T00:02:00Z",
        },
    ),
    EventType(
        "user.registered",
        "A new user created an account.",
        {
            "id": "user_1679091c",
            "username": "ada",
            "displayName": "Ada Lovelace",
            "createdAt": "2024-01-01T00:00:00Z",
        },
    ),
    EventType(
        "friend.request.sent",
        "A user sent a friend request to another user.",
        {
            "id": "freq_8e296a06",
            "fromUserId": "user_c4ca4238",
            "toUserId": "user_1679091c",
            "createdAt": "2024-01-01T00:03:00Z",
        },
    ),
    EventType(
        "friend.request.accepted",
        "A user accepted a friend request; the two users are now friends.",
        {
            "id": "freq_8e296a06",
            "fromUserId": "user_c4ca4238",
            "toUserId": "user_1679091c",
            "acceptedAt": "2024-01-01T00:04:00Z",
        },
    ),
)

CATALOG: Mapping[str, EventType] = MappingProxyType({t.name: t for t in _EVENT_TYPES})
EVENT_NAMES: tuple[str, ...] = tuple(CATALOG)


def event_type(name: str) -> EventType:
    """The catalog entry for ``name``; UnknownEventType lists the valid names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownEventType(
            f"unknown event type {name!r}; valid types are: {', '.join(EVENT_NAMES)}",
            details=[{"field": "event", "value": name, "allowed": list(EVENT_NAMES)}],
        ) from None


def normalize_subscription(events: Iterable[str], *, max_events: int = 50) -> tuple[str, ...]:
    """Validate a webhook's ``events`` list: catalog names or ``["*"]``, de-duplicated."""
    names = list(dict.fromkeys(events))
    if not names:
        raise InvalidInput(
            'events must list at least one event type, or ["*"] for all',
            details=[{"field": "events", "allowed": [WILDCARD, *EVENT_NAMES]}],
        )
    if len(names) > max_events:
        raise InvalidInput(
            f"events may list at most {max_events} event types",
            details=[{"field": "events"}],
        )
    if WILDCARD in names:
        if len(names) > 1:
            raise InvalidInput(
                '"*" subscribes to every event and cannot be combined with other names',
                details=[{"field": "events"}],
            )
        return (WILDCARD,)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise UnknownEventType(
            f"unknown event type{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)}; valid types are: {', '.join(EVENT_NAMES)}",
            details=[
                {"field": "events", "value": n, "allowed": [WILDCARD, *EVENT_NAMES]}
                for n in unknown
            ],
        )
    return tuple(names)


def subscribes_to(subscription: Iterable[str], event: str) -> bool:
    return any(name in (WILDCARD, event) for name in subscription)
