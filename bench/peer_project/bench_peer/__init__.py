"""A tiny Django project that runs django-outbound-webhooks for the bench (peer venv only)."""
