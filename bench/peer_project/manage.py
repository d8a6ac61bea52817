"""django-admin for the bench's peer project (run it with the peer venv's python)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_peer.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
