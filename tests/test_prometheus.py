"""caxton_models.prometheus: the metrics in a real prometheus_client registry,
the same samples as ``exposition()``, and automatic in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from caxton_models import metrics
from caxton_models.prometheus import CaxtonCollector, register


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("caxton_model_") and not s.name.endswith("_created")
    }


class FakeCache:
    def total_size(self) -> int:
        return 12345


def test_collector_gives_the_samples_of_exposition() -> None:
    reg = metrics.Registry()
    reg.observe_download("org/a", "ok", 0.3)
    reg.observe_download("org/a", "ok", 42.0)
    reg.observe_download("org/b", "timeout", 2000.0)
    reg.count_validation_failure("org/a", "checksum")
    reg.count(metrics.VALIDATIONS, model_id="org/a", mode="full")
    reg.count(metrics.UPDATE_CHECKS, model_id="org/a", result="failed")
    reg.set_load_time("org/a", 0.25)
    reg.watch_cache(FakeCache())
    prom = CollectorRegistry()
    prom.register(CaxtonCollector(reg))
    ours, theirs = samples(reg.exposition()), samples(generate_latest(prom).decode())
    assert theirs == ours
    assert theirs[("caxton_model_cache_size_bytes", ())] == 12345
    key = ("caxton_model_download_duration_seconds_bucket", (("le", "+Inf"), ("model_id", "org/a"),
                                                            ("status", "ok")))  # fmt: skip
    assert theirs[key] == 2
    assert theirs[("caxton_model_validation_failures_total",
                   (("failure_type", "checksum"), ("model_id", "org/a")))] == 1  # fmt: skip


def test_register_is_idempotent_and_reads_the_process_metrics() -> None:
    prom = CollectorRegistry()
    assert register(prom) is not None
    assert register(prom) is None  # a second call adds nothing (no duplicate error)
    before = samples(generate_latest(prom).decode())
    metrics.count_validation_failure("org/prom-test", "size")
    after = samples(generate_latest(prom).decode())
    key = ("caxton_model_validation_failures_total", (("failure_type", "size"),
                                                      ("model_id", "org/prom-test")))  # fmt: skip
    assert after[key] == before.get(key, 0) + 1


@pytest.mark.parametrize("prom_first", [True, False])
def test_default_registry_gets_them_in_a_fresh_process(prom_first: bool) -> None:
    """An application that imports prometheus_client (before or after caxton's
    metrics) sees caxton_model_* on its own /metrics without a call."""
    first, second = ("prometheus_client", "caxton_models.metrics")[:: 1 if prom_first else -1]
    code = textwrap.dedent(f"""
        import importlib
        importlib.import_module({first!r}); importlib.import_module({second!r})
        from caxton_models import metrics
        import prometheus_client
        metrics.observe_download("org/fresh", "ok", 1.5)
        print(prometheus_client.generate_latest().decode())
    """)
    env = {**os.environ, "CAXTON_PROMETHEUS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout  # fmt: skip
    key = ("caxton_model_download_duration_seconds_count",
           (("model_id", "org/fresh"), ("status", "ok")))  # fmt: skip
    assert samples(out)[key] == 1
    assert "python_gc_objects_collected_total" in out  # the application's own metrics too
    env["CAXTON_PROMETHEUS"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout  # fmt: skip
    assert "caxton_model_" not in out
