"""The client commands of ``bellhook``: calls of a running service through ``bellhook.Client``.

``webhooks``, ``events`` and ``deliveries`` are Typer sub-apps and ``recover`` a
top-level command; ``bellhook.cli`` registers them. ``common`` holds what they share:
the ``--url``/``--api-key``/``--json`` options, running a call, printing, exit codes.
"""
