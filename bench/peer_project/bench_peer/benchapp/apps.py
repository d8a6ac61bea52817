from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "bench_peer.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        from bench_peer.benchapp import events  # noqa: F401 (declares the event)
