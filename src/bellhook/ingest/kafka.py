"""The Kafka client: confluent-kafka (librdkafka), behind the ``bellhook[kafka]`` extra.

Nothing outside ``bellhook.ingest`` imports a Kafka client. Why confluent-kafka rather
than aiokafka: both were measured in `make bench`'s scenario 7 on the same broker and
messages. End to end they were within noise of each other (30-33 against 31-32
thousand events/s), since the store is the bound; a bare consumer loop read 1.0-1.5
million messages/s with confluent-kafka against 0.4-0.9 million with aiokafka, and
librdkafka fetches and decodes in its own threads, outside the GIL, while the event loop
stores the previous batch. librdkafka's properties also cover every SASL and TLS option
a real cluster may need (``BELLHOOK_KAFKA_OPTIONS``).

A ``Consumer`` is not thread-safe and its calls block, so every call runs on one
thread of its own (``_calls``): the event loop never blocks, and calls never overlap.
Rebalance callbacks run on that thread too, inside ``poll``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from bellhook.config import Settings
from bellhook.errors import BellhookError, ConfigurationError
from bellhook.ingest.messages import Message

log = structlog.get_logger("bellhook.kafka")
LAG_TIMEOUT = 2.0  # seconds the broker has to say where a partition's log ends


class KafkaUnavailable(BellhookError):
    """The Kafka client failed in a way the consumer cannot recover from by itself."""

    code = "kafka_unavailable"


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties from the settings; ``BELLHOOK_KAFKA_OPTIONS`` last, so an
    operator can set any property the client has."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        "client.id": "bellhook",
    }
    optional = {
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": settings.kafka_sasl_password
        and settings.kafka_sasl_password.get_secret_value(),
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
        "ssl.key.password": settings.kafka_ssl_key_password
        and settings.kafka_ssl_key_password.get_secret_value(),
    }
    config.update({k: v for k, v in optional.items() if v})
    config.update(parse_options(settings.kafka_options))
    return config


def parse_options(text: str) -> dict[str, str]:
    """``name=value,name=value`` into properties."""
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(
                f"BELLHOOK_KAFKA_OPTIONS: {part!r} is not name=value "
                "(e.g. session.timeout.ms=10000)"
            )
        options[name.strip()] = value.strip()
    for name, refused in _UNVERIFIED_TLS.items():
        if options.get(name, "").lower() in refused:
            raise ConfigurationError(
                f"BELLHOOK_KAFKA_OPTIONS: {name}={options[name]} would turn off the "
                "broker's certificate check; bellhook always verifies TLS "
                "(give the broker's CA with BELLHOOK_KAFKA_SSL_CA_LOCATION)"
            )
    return options


# librdkafka properties whose values switch TLS verification off: refused, as for
# webhook deliveries, so no setting makes bellhook trust an unverified peer.
_UNVERIFIED_TLS = {
    "enable.ssl.certificate.verification": {"false", "0"},
    "ssl.endpoint.identification.algorithm": {"none"},
}


def _import_confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ConfigurationError(
            "Kafka ingestion needs the kafka extra: pip install 'bellhook[kafka]'"
        ) from exc
    return confluent_kafka


class KafkaClient:
    """A consumer in a group, and a producer for the dead-letter topic, on one thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
        on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self._kafka = _import_confluent()
        self._settings = settings
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._consumer: Any = None
        self._producer: Any = None
        self._paused = False
        self._stored: dict[tuple[str, int], int] = {}  # next offset, per partition

    async def _run(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._calls, call, *args)

    async def start(self) -> None:
        await self._run(self._start)

    def _start(self) -> None:
        config = client_config(self._settings)
        consumer_config = {
            # A new group starts at the beginning of what the topic retains: nothing
            # published before bellhook's first start is skipped (docs/kafka.md).
            "auto.offset.reset": "earliest",
            **config,
            "group.id": self._settings.kafka_group,
            # Offsets are committed by hand, only once the events are stored.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "on_commit": self._committed,
        }
        try:
            self._consumer = self._kafka.Consumer(consumer_config, logger=_LibrdkafkaLog())
            topics = [t.strip() for t in self._settings.kafka_topics.split(",") if t.strip()]
            self._consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)
            if self._settings.kafka_dlq_topic:
                self._producer = self._kafka.Producer(
                    {**config, "enable.idempotence": True}, logger=_LibrdkafkaLog()
                )
        except self._kafka.KafkaException as exc:
            raise ConfigurationError(f"the Kafka client cannot start: {exc}") from exc

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        consumer.assign(partitions)
        if self._paused:  # a partition assigned while paused stays paused
            consumer.pause(partitions)
        if self._on_assign is not None:
            self._on_assign([(p.topic, p.partition) for p in partitions])

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        # Every batch read was stored before this poll; its commit may still be in
        # flight, so commit what is stored once more, and wait, before letting go.
        self._commit_stored(wait=True)
        consumer.unassign()
        if self._on_revoke is not None:
            self._on_revoke([(p.topic, p.partition) for p in partitions])

    async def poll(self, max_messages: int, *, wait: float) -> list[Message]:
        """Up to ``max_messages``, waiting up to ``wait`` seconds for the first."""
        return list(await self._run(self._poll, max_messages, wait))

    def _poll(self, max_messages: int, wait: float) -> list[Message]:
        found = []
        for m in self._consumer.consume(max_messages, wait):
            if m.error() is not None:
                error = m.error()
                if error.fatal():
                    raise KafkaUnavailable(f"the Kafka consumer failed: {error.str()}")
                log.warning("kafka.consume_error", error=error.str(), code=error.name())
                continue
            found.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
        return found

    async def commit(self, messages: Sequence[Message]) -> None:
        """Commit past ``messages``, which are stored already.

        Without waiting for the broker: a commit that is lost only means those messages
        are read again, and stored as duplicates (nothing fans out twice). Before
        partitions are revoked and on close, the stored positions are committed again,
        waiting.
        """
        await self._run(self._store_positions, list(messages))

    def _store_positions(self, messages: list[Message]) -> None:
        for m in messages:
            key = (m.topic, m.partition)
            self._stored[key] = max(self._stored.get(key, -1), m.offset + 1)
        self._commit_stored(wait=False)

    def _commit_stored(self, *, wait: bool) -> None:
        if not self._stored or self._consumer is None:
            return
        offsets = [self._kafka.TopicPartition(t, p, o) for (t, p), o in self._stored.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not wait)
        except self._kafka.KafkaException as exc:
            # The group moved on: another member reads these again (duplicates).
            log.warning("kafka.commit_failed", error=exc.args[0].str())
        if wait:
            self._stored.clear()

    def _committed(self, err: Any, _partitions: list[Any]) -> None:
        if err is not None and err.code() != self._kafka.KafkaError._NO_OFFSET:
            log.warning("kafka.commit_failed", error=err.str())

    async def set_paused(self, paused: bool) -> None:
        await self._run(self._set_paused, paused)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        assignment = self._consumer.assignment()
        if assignment:
            (self._consumer.pause if paused else self._consumer.resume)(assignment)

    async def dead_letter(self, messages: Sequence[tuple[Message, str, str]]) -> None:
        """Produce refused messages, as they were, to the dead-letter topic, with why in
        their headers; returns once the broker has them."""
        if self._producer is None or not messages:
            return
        await self._run(self._dead_letter, list(messages))

    def _dead_letter(self, messages: list[tuple[Message, str, str]]) -> None:
        topic = self._settings.kafka_dlq_topic
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err.str())

        for m, code, reason in messages:
            headers = [
                ("bellhook-error-code", code.encode()),
                ("bellhook-error-reason", reason.encode()[:1024]),
                ("bellhook-source", f"{m.topic}/{m.partition}/{m.offset}".encode()),
            ]
            self._producer.produce(topic, m.value, m.key, headers=headers, on_delivery=delivered)
        remaining = self._producer.flush(30)
        if remaining or failed:
            raise KafkaUnavailable(
                f"the dead-letter topic {topic!r} did not take {remaining or len(failed)} "
                f"message(s): {failed[0] if failed else 'timed out'}"
            )

    async def lags(self) -> list[tuple[str, int, int]]:
        """(topic, partition, messages after the committed offset) of each partition
        assigned."""
        return list(await self._run(self._lags))

    def _lags(self) -> list[tuple[str, int, int]]:
        if self._consumer is None:
            return []
        try:
            assignment = self._consumer.assignment()
            positions = {
                (p.topic, p.partition): p.offset for p in self._consumer.position(assignment)
            }
            # A partition not read since it was assigned (paused: backpressure, an
            # outage) has no position yet: its committed offset says where it stands.
            unread = [p for p in assignment if positions.get((p.topic, p.partition), -1) < 0]
            if unread:
                for p in self._consumer.committed(unread, timeout=LAG_TIMEOUT):
                    positions[p.topic, p.partition] = p.offset
        except self._kafka.KafkaException:
            return []  # between a revoke and an assignment; asked again later
        found = []
        # One request a partition, on the client's one thread: within LAG_TIMEOUT in
        # all, so that a slow broker delays polls and commits by that much at most.
        deadline = time.monotonic() + LAG_TIMEOUT
        for tp in assignment:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            key = (tp.topic, tp.partition)
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=left)
            except self._kafka.KafkaException:
                continue  # asked again at the next check; the broker's trouble is logged
            # The larger of what the broker says now and what the last fetch said: a
            # paused consumer's fetches stand still, and some Kafka-protocol brokers
            # (Tansu) answer the query with less than their fetches report.
            high = max(high, self._consumer.get_watermark_offsets(tp, cached=True)[1])
            done = self._stored.get(key, positions.get(key, -1))
            if high >= 0 and done >= 0:  # nothing committed yet: unknown, not 0
                found.append((tp.topic, tp.partition, max(high - done, 0)))
        return found

    async def close(self) -> None:
        """Leave the group (its partitions go to the others at once) and stop."""
        try:
            await self._run(self._close)
        finally:
            self._calls.shutdown(wait=True)

    def _close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        if self._consumer is not None:
            self._commit_stored(wait=True)
            self._consumer.close()


class _LibrdkafkaLog:
    """librdkafka's log lines into bellhook's structured log (it would print them)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("bellhook.kafka.client")

    def log(self, level: int, msg: str, *args: Any, **_kw: Any) -> None:
        text = msg % args if args else msg
        if level >= 40:
            self._log.error("kafka.client", message=text)
        elif level >= 30:
            self._log.warning("kafka.client", message=text)
        else:
            self._log.debug("kafka.client", message=text)
