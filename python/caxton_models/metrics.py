"""Process-wide metrics of model management, in Prometheus' text format (0.0.4).

The spec's five metrics, and three counters of our own::

    caxton_model_download_duration_seconds{model_id, status}   histogram
    caxton_model_cache_size_bytes                              gauge (read at scrape time)
    caxton_model_validation_failures_total{model_id, failure_type}  counter
    caxton_model_load_time_seconds{model_id}                   gauge (the latest load)
    caxton_model_memory_usage_bytes{model_id}                  gauge (read at scrape time)
    caxton_model_validations_total{model_id, mode}             counter (quick, full)
    caxton_model_update_checks_total{model_id, result}         counter (ok, failed)
    caxton_model_degraded_loads_total{model_id, mode}          counter (keyword)

Recording (``observe_download``, ``count_validation_failure``, ``set_load_time``)
is a dict update under one lock: no I/O, and it never raises into the caller.
The two gauges that describe state rather than events are computed when the
metrics are read, from the cache and the loaded-model managers registered with
``watch_cache`` / ``watch_memory``, so they cannot drift from the truth.

``prometheus_client`` is not a dependency: the format is a few lines of text,
and a library that embeds models should not pull a metrics stack into every
application. ``exposition()`` is what ``caxton metrics`` prints and what
``GET /metrics`` of ``caxton model serve`` answers. Where an application does
use ``prometheus_client`` (the ``caxton-models[prometheus]`` extra), the same
metrics join its default registry as soon as both are imported (see
:mod:`caxton_models.prometheus`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caxton_models.errors import download_status

__all__ = [
    "CONTENT_TYPE",
    "DEGRADED_LOADS",
    "DOWNLOAD_BUCKETS",
    "UPDATE_CHECKS",
    "VALIDATIONS",
    "Registry",
    "Snapshot",
    "count",
    "count_validation_failure",
    "download_status",
    "exposition",
    "observe_download",
    "registry",
    "set_load_time",
    "watch_cache",
    "watch_memory",
]

log = logging.getLogger("caxton_models.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: a config file takes well under one, a large model over a slow link many minutes.
DOWNLOAD_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip

DOWNLOAD_DURATION = "caxton_model_download_duration_seconds"
CACHE_SIZE = "caxton_model_cache_size_bytes"
VALIDATION_FAILURES = "caxton_model_validation_failures_total"
LOAD_TIME = "caxton_model_load_time_seconds"
MEMORY_USAGE = "caxton_model_memory_usage_bytes"
VALIDATIONS = "caxton_model_validations_total"
UPDATE_CHECKS = "caxton_model_update_checks_total"
DEGRADED_LOADS = "caxton_model_degraded_loads_total"
_COUNTERS = (VALIDATION_FAILURES, VALIDATIONS, UPDATE_CHECKS, DEGRADED_LOADS)

_HELP = {
    DOWNLOAD_DURATION: "Time to download and install a model, by outcome.",
    CACHE_SIZE: "Bytes of installed models in the model cache.",
    VALIDATION_FAILURES: "Validation steps a model failed, by kind of problem.",
    LOAD_TIME: "Seconds the latest load of a model took.",
    MEMORY_USAGE: "Estimated resident bytes of each loaded model.",
    VALIDATIONS: "Validations of an installed model, quick (sizes, manifest) or full (SHA-256).",
    UPDATE_CHECKS: "Checks of the Hub for a newer revision of a model, by result.",
    DEGRADED_LOADS: "Loads that got keyword-only vectors (degraded mode) for a model.",
}

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n  # per bucket, not cumulative: cumulated when read
        self.count = 0
        self.sum = 0.0


class Registry:
    """The metrics of one process (``registry()``); tests may build their own."""

    def __init__(self, buckets: Sequence[float] = DOWNLOAD_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._buckets = tuple(sorted(buckets))
        self._downloads: dict[Labels, _Histogram] = {}
        self._counters: dict[str, dict[Labels, float]] = {name: {} for name in _COUNTERS}
        self._load_times: dict[Labels, float] = {}
        self._cache: Any = None  # a ModelCache, strongly held: it is small
        self._memory: weakref.WeakSet[Any] = weakref.WeakSet()

    # ------------------------------------------------------------------ recording

    def observe_download(self, model_id: str, status: str, seconds: float) -> None:
        key = _key(model_id=model_id, status=status)
        seconds = float(seconds)
        with self._lock:
            h = self._downloads.get(key)
            if h is None:
                h = self._downloads[key] = _Histogram(len(self._buckets) + 1)
            i = 0
            while i < len(self._buckets) and seconds > self._buckets[i]:
                i += 1
            h.buckets[i] += 1
            h.count += 1
            h.sum += seconds

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        """Add ``n`` to one of the counters (``_COUNTERS``)."""
        key = _key(**labels)
        with self._lock:
            table = self._counters[name]
            table[key] = table.get(key, 0) + n

    def count_validation_failure(self, model_id: str, failure_type: str, n: int = 1) -> None:
        self.count(VALIDATION_FAILURES, n, model_id=model_id, failure_type=failure_type)

    def set_load_time(self, model_id: str, seconds: float) -> None:
        with self._lock:
            self._load_times[_key(model_id=model_id)] = float(seconds)

    def watch_cache(self, cache: Any) -> None:
        """The cache whose size ``caxton_model_cache_size_bytes`` reports: the
        latest one given (one cache per process is the normal case)."""
        with self._lock:
            self._cache = cache

    def watch_memory(self, manager: Any) -> None:
        """A loaded-model manager (``memory_by_model() -> {model_id: bytes}``),
        held weakly: a dropped manager stops reporting."""
        with self._lock:
            self._memory.add(manager)

    # ------------------------------------------------------------------ reading

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 if never recorded): for tests and
        health checks. Histograms answer for ``<name>_count`` and ``<name>_sum``."""
        key = _key(**labels)
        with self._lock:
            if name in self._counters:
                return float(self._counters[name].get(key, 0))
            if name == LOAD_TIME:
                return self._load_times.get(key, 0.0)
            if name in (DOWNLOAD_DURATION + "_count", DOWNLOAD_DURATION + "_sum"):
                h = self._downloads.get(key)
                if h is None:
                    return 0.0
                return float(h.count) if name.endswith("_count") else h.sum
        raise KeyError(f"{name} is not a recorded metric of caxton_models.metrics")

    def _memory_samples(self) -> dict[Labels, float]:
        with self._lock:
            managers = list(self._memory)
        out: dict[Labels, float] = {}
        for m in managers:
            try:
                usage = m.memory_by_model()
            except Exception as e:  # a scrape must not fail for one manager
                log.debug("memory usage not readable: %s", e)
                continue
            for model_id, nbytes in usage.items():
                key = _key(model_id=model_id)
                out[key] = out.get(key, 0.0) + float(nbytes)
        return out

    def _cache_size(self) -> float | None:
        with self._lock:
            cache = self._cache
        if cache is None:
            return None
        try:
            return float(cache.total_size())
        except Exception as e:
            log.debug("cache size not readable: %s", e)
            return float("nan")

    def snapshot(self) -> Snapshot:
        """Every metric's current samples, consistent with each other (one
        lock), for ``exposition`` and the prometheus_client collector."""
        cache_size = self._cache_size()
        memory = self._memory_samples()
        with self._lock:
            downloads = {k: (list(h.buckets), h.count, h.sum) for k, h in self._downloads.items()}
            counters = {name: dict(table) for name, table in self._counters.items()}
            load_times = dict(self._load_times)
        return Snapshot(self._buckets, downloads, cache_size, counters, load_times, memory)

    def exposition(self) -> str:
        """All metrics in the text exposition format 0.0.4 (ends with a newline)."""
        snap = self.snapshot()
        downloads, cache_size, load_times, memory = (
            snap.downloads, snap.cache_size, snap.load_times, snap.memory
        )  # fmt: skip
        counters = {name: dict(table) for name, table in snap.counters.items()}
        lines: list[str] = []
        lines += _family_header(DOWNLOAD_DURATION, "histogram")
        for key, (counts, count, total) in sorted(downloads.items()):
            cumulative = 0
            for bound, n in zip([*self._buckets, math.inf], counts, strict=True):
                cumulative += n
                lines.append(_sample(DOWNLOAD_DURATION + "_bucket", (*key, ("le", _le(bound))),
                                     cumulative))  # fmt: skip
            lines.append(_sample(DOWNLOAD_DURATION + "_sum", key, total))
            lines.append(_sample(DOWNLOAD_DURATION + "_count", key, count))
        lines += _family_header(CACHE_SIZE, "gauge")
        if cache_size is not None:
            lines.append(_sample(CACHE_SIZE, (), cache_size))
        lines += _family_header(VALIDATION_FAILURES, "counter")
        lines += _samples(VALIDATION_FAILURES, counters.pop(VALIDATION_FAILURES))
        lines += _family_header(LOAD_TIME, "gauge")
        lines += _samples(LOAD_TIME, load_times)
        lines += _family_header(MEMORY_USAGE, "gauge")
        lines += _samples(MEMORY_USAGE, memory)
        for name, table in counters.items():
            lines += _family_header(name, "counter")
            lines += _samples(name, table)
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Snapshot:
    """What :meth:`Registry.snapshot` read. ``downloads`` maps labels to
    (per-bucket counts, not cumulative, the last one +Inf; count; sum)."""

    buckets: tuple[float, ...]
    downloads: dict[Labels, tuple[list[int], int, float]]
    cache_size: float | None
    counters: dict[str, dict[Labels, float]]
    load_times: dict[Labels, float]
    memory: dict[Labels, float]


def help_text(name: str) -> str:
    return _HELP[name]


def _key(**labels: object) -> Labels:
    """Labels sorted by name: one key per label set, however the caller orders them."""
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _family_header(name: str, kind: str) -> list[str]:
    return [f"# HELP {name} {_escape_help(_HELP[name])}", f"# TYPE {name} {kind}"]


def _samples(name: str, table: Mapping[Labels, float]) -> Iterator[str]:
    for key, value in sorted(table.items()):
        yield _sample(name, key, value)


def _sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return f"{name}{{{pairs}}} {_num(value)}" if pairs else f"{name} {_num(value)}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _le(bound: float) -> str:
    # Always as a float ("1.0", like the official clients): Prometheus before 3.0
    # compares le as a string, so "1" and "1.0" would be two different buckets.
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _num(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value)) if abs(value) < 1e15 else repr(float(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# --------------------------------------------------------------------------- the process's


_REGISTRY = Registry()


def registry() -> Registry:
    return _REGISTRY


_exported = False
#: Registers the process's metrics with prometheus_client; set by the package's
#: ``__init__``, since this module sits below the integration and must not import it.
_prometheus_hook: Callable[[], object] | None = None


def set_prometheus_hook(hook: Callable[[], object]) -> None:
    global _prometheus_hook
    _prometheus_hook = hook


def _export_to_prometheus() -> None:
    """Once prometheus_client is imported in this process, its default
    registry gets our collector (``CAXTON_PROMETHEUS=0``: never). A check of
    ``sys.modules``, not an import: processes without it pay nothing."""
    global _exported
    if _exported or _prometheus_hook is None or "prometheus_client" not in sys.modules:
        return
    _exported = True
    if os.environ.get("CAXTON_PROMETHEUS", "").strip().lower() in ("0", "false", "no", "off"):
        return
    try:
        _prometheus_hook()
    except Exception as e:  # metrics must never break the operation they describe
        log.debug("not registered with prometheus_client: %s", e)


def _safe(fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    _export_to_prometheus()
    try:
        fn(*args, **kwargs)
    except Exception as e:  # metrics must never break the operation they describe
        log.debug("metric not recorded: %s", e)


def observe_download(model_id: str, status: str, seconds: float) -> None:
    _safe(_REGISTRY.observe_download, model_id, status, seconds)


def count_validation_failure(model_id: str, failure_type: str) -> None:
    _safe(_REGISTRY.count_validation_failure, model_id, failure_type)


def set_load_time(model_id: str, seconds: float) -> None:
    _safe(_REGISTRY.set_load_time, model_id, seconds)


def watch_cache(cache: Any) -> None:
    _safe(_REGISTRY.watch_cache, cache)


def watch_memory(manager: Any) -> None:
    _safe(_REGISTRY.watch_memory, manager)


def exposition() -> str:
    return _REGISTRY.exposition()


def count(name: str, **labels: str) -> None:
    _safe(_REGISTRY.count, name, 1, **labels)


_export_to_prometheus()
