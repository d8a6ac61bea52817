"""Settings of the bench's Django project: SQLite, django-outbound-webhooks, one event type.

The SQLite file comes from ``BENCH_PEER_DB``. It gets the pragmas bellhook uses (WAL,
synchronous=NORMAL) so that the comparison is not one of fsync policies.
"""

import os

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_domain_events",
    "django_outbound_webhooks",
    "bench_peer.benchapp",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_PEER_DB", "peer.db"),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "timeout": 30,
        },
    }
}
DJANGO_DOMAIN_EVENTS = {
    # SQLite cannot LISTEN/NOTIFY; the relay polls.
    "WAKE": "poll",
}
DJANGO_OUTBOUND_WEBHOOKS = {
    # The receiver is on 127.0.0.1; the bench never leaves the machine.
    "ALLOW_PRIVATE_ADDRESSES": True,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
