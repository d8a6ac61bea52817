"""The peer's side of the bench: django-outbound-webhooks 0.4.0 on SQLite.

Runs with the bench-only virtualenv (``bench/.venv-peer/bin/python``), never with
bellhook's. ``setup`` migrates a fresh SQLite file, registers the endpoints with
``register_endpoint`` (one ``whsec_`` secret each, subscribed to ``post.created``) and
fires the events with django-domain-events' ``fire()`` inside transactions, as an
application would; it prints the secrets as JSON for the receiver. Delivery is then
the package's own management command, run by the orchestrator as a separate process::

    BENCH_PEER_DB=/tmp/x/peer.db bench/.venv-peer/bin/python bench/peer.py setup \\
        --targets '[["peer0", "http://127.0.0.1:18080/ok/peer0"]]' --events 2000
    BENCH_PEER_DB=/tmp/x/peer.db bench/.venv-peer/bin/python \\
        bench/peer_project/manage.py deliver_events --once
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent / "peer_project"
CONTENT = ("Hello, Bellamy Book! " * 20)[:160]  # the same data as bench.common.event_payload


def setup(targets: list[tuple[str, str]], events: int, prefix: str, chunk: int) -> dict:
    sys.path.insert(0, str(PROJECT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_peer.settings")
    import django

    django.setup()
    from bench_peer.benchapp.events import PostCreated
    from django.core.management import call_command
    from django.db import transaction
    from django_domain_events import fire
    from django_outbound_webhooks import register_endpoint

    call_command("migrate", verbosity=0)
    keys: dict[str, str] = {}
    for name, url in targets:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        register_endpoint(name=name, url=url, secret=secret, event_names=["post.created"])
        keys[name] = secret
    started = time.perf_counter()
    for start in range(0, events, chunk):
        with transaction.atomic():
            for i in range(start, min(start + chunk, events)):
                fire(
                    PostCreated(
                        id=f"post_{prefix}{i}",
                        content=CONTENT,
                        authorId="user_c4ca4238",
                        visibility="public",
                        createdAt="2024-01-01T00:00:00Z",
                    )
                )
    return {"secrets": keys, "events": events, "fire_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="migrate, register endpoints, fire events")
    s.add_argument("--targets", required=True, help="JSON list of [name, url]")
    s.add_argument("--events", type=int, required=True)
    s.add_argument("--prefix", default="peer-")
    s.add_argument("--chunk", type=int, default=500, help="events fired per transaction")
    args = parser.parse_args()
    if "BENCH_PEER_DB" not in os.environ:
        parser.error("set BENCH_PEER_DB to the SQLite file to use")
    targets = [(name, url) for name, url in json.loads(args.targets)]
    for _, url in targets:
        if not url.startswith("http://127.0.0.1:"):
            parser.error("the bench only delivers to 127.0.0.1")
    print(json.dumps(setup(targets, args.events, args.prefix, args.chunk)), flush=True)


if __name__ == "__main__":
    main()
