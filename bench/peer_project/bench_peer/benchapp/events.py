"""The event the bench fires: bellhook's post.created, as a django-domain-events event."""

from dataclasses import dataclass

from django_domain_events import event


@event(name="post.created")
@dataclass(frozen=True)
class PostCreated:
    id: str
    content: str
    authorId: str
    visibility: str
    createdAt: str
