"""Scenarios 1-3 (delivery to 1 and 10 webhooks, the ceiling, the peer) and the same
drains on PostgreSQL."""

from __future__ import annotations

from typing import Any

from bench.config import Config
from bench.host import log
from bench.procs import Postgres, sqlite_url, workdir
from bench.scenarios.drain import bellhook_drain, ceiling_run, peer_run
from bench.scenarios.steady import steady_run
from bench.table import fmt, ms


def scenario_throughput(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    workloads = {
        "single": (1, cfg.tp_events),
        "fanout": (cfg.fan_webhooks, cfg.fan_events),
    }
    for tag, (webhooks, events) in workloads.items():
        log(f"throughput/{tag}: {events:,} events x {webhooks} webhook(s), SQLite")
        with workdir(f"tp-{tag}") as tmp:
            result = bellhook_drain(cfg, tag, sqlite_url(tmp), tmp, webhooks, events)
        log(
            f"  bellhook {result['drain']['rate']:,.0f}/s, "
            f"{fmt(result['drain']['cpu_per_1000'], '.2f')} CPU-s/1000"
        )
        if not cfg.quick:
            with workdir(f"tp-{tag}-2p") as tmp:
                two = bellhook_drain(
                    cfg, f"{tag}2p", sqlite_url(tmp), tmp, webhooks, events, processes=2
                )
            # CPU is not comparable: measure_drain samples the supervisor only.
            result["two_processes"] = {
                k: two[k] for k in ("drain", "duplicates", "receiver", "db_after")
            }
            log(f"  bellhook worker --processes 2: {two['drain']['rate']:,.0f}/s")
        body = result["receiver"]["body_bytes_mean"]
        for loop in ("asyncio",) if cfg.quick else ("asyncio", "uvloop"):
            with workdir(f"ceil-{tag}") as tmp:
                result[f"ceiling_{loop}"] = ceiling_run(
                    cfg, tmp, webhooks, events * webhooks, loop, body
                )
            log(f"  ceiling ({loop}) {result[f'ceiling_{loop}']['rate']:,.0f}/s")
        # The bare client split as `worker --processes 2` splits bellhook: whether a
        # second process can gain anything on this machine at all (in quick runs too,
        # where it is a second of work and proves the split client works).
        with workdir(f"ceil-{tag}-2p") as tmp:
            result["ceiling_uvloop_2p"] = ceiling_run(
                cfg, tmp, webhooks, events * webhooks, "uvloop", body, processes=2
            )
        log(f"  ceiling (uvloop, 2 processes) {result['ceiling_uvloop_2p']['rate']:,.0f}/s")
        if cfg.with_peer:
            peer_events = cfg.peer_events if webhooks == 1 else cfg.peer_fan_events
            with workdir(f"peer-{tag}") as tmp:
                try:
                    result["peer"] = peer_run(cfg, tmp, webhooks, peer_events)
                    log(f"  peer {result['peer']['drain']['rate']:,.1f}/s")
                except Exception as exc:  # the peer must not take the rest down
                    result["peer"] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"  peer failed: {exc}")
        out[tag] = result
    return out


PROCESS_KEYS = {2: "two_processes", 4: "four_processes"}


def scenario_postgres(cfg: Config) -> dict[str, Any]:
    if not cfg.pg_url:
        return {"skipped": "BELLHOOK_BENCH_DATABASE_URL is not set"}
    pg = Postgres(cfg.pg_url)
    out: dict[str, Any] = {}
    try:
        for tag, (webhooks, events) in {
            "single": (1, cfg.pg_events),
            "fanout": (cfg.fan_webhooks, cfg.pg_fan_events),
        }.items():
            log(f"postgres/{tag}: {events:,} events x {webhooks} webhook(s)")
            wal_before = pg.wal_position()
            with workdir(f"pg-{tag}") as tmp:
                out[tag] = bellhook_drain(cfg, f"pg{tag}", pg.fresh(), tmp, webhooks, events)
            # For capacity plans: the log written per delivery, ingest to outcome.
            wal = (pg.wal_position() - wal_before) / (events * webhooks)
            out[tag]["wal_bytes_per_delivery"] = wal
            log(
                f"  bellhook on PostgreSQL {out[tag]['drain']['rate']:,.0f}/s, "
                f"{wal:,.0f} B of WAL a delivery"
            )
            # Many workers on one PostgreSQL is how it is meant to run; four for the
            # fan-out, where the scale-out row compares them.
            counts = () if cfg.quick else (2, 4) if tag == "fanout" else (2,)
            for processes in counts:
                with workdir(f"pg-{tag}-{processes}p") as tmp:
                    more = bellhook_drain(
                        cfg, f"pg{tag}{processes}p", pg.fresh(), tmp, webhooks, events,
                        processes=processes,
                    )  # fmt: skip
                out[tag][PROCESS_KEYS[processes]] = {
                    k: more[k] for k in ("drain", "duplicates", "receiver", "db_after")
                }
                log(f"  bellhook worker --processes {processes}: {more['drain']['rate']:,.0f}/s")
        # First attempts with the API and the worker in processes of their own, woken
        # across processes by LISTEN/NOTIFY: how operators scale out.
        log(f"postgres/apart: {cfg.steady_rate:g} events/s, serve --no-worker + worker")
        with workdir("pg-apart") as tmp:
            out["apart"] = steady_run(
                cfg, "pgapart", tmp, ["ok"], {}, hang=0, db_url=pg.fresh(), separate_worker=True
            )
        sent = out["apart"]["from_send_ms"]
        log(
            f"  from the request: p50 {ms(sent['p50'], cfg.arrival_wait)}, "
            f"p99 {ms(sent['p99'], cfg.arrival_wait)}"
        )
    finally:
        pg.drop_all()
    return out
