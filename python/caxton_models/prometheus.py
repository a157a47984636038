"""caxton_models' metrics in a ``prometheus_client`` registry.

Install ``caxton-models[prometheus]`` (or any ``prometheus_client``): once
that package is imported in the process, :mod:`caxton_models.metrics`
registers :class:`CaxtonCollector` with its default registry by itself, so
the application's own ``/metrics`` (``start_http_server``,
``make_wsgi_app``, ...) shows ``caxton_model_*`` next to its metrics. Call
:func:`register` for another registry; ``CAXTON_PROMETHEUS=0`` turns the
automatic registration off.

The collector reads the same process-wide :class:`~caxton_models.metrics.Registry`
as ``exposition()`` at scrape time: nothing is copied, nothing can drift.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from caxton_models import metrics as _m

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["CaxtonCollector", "register"]

_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class CaxtonCollector:
    """A ``prometheus_client`` collector of one :class:`~caxton_models.metrics.Registry`
    (default: the process's)."""

    def __init__(self, registry: _m.Registry | None = None) -> None:
        self._registry = registry or _m.registry()

    def describe(self) -> Iterator[Any]:
        # Names only: registering must not read the cache or the models.
        yield from self._families(None)

    def collect(self) -> Iterator[Any]:
        yield from self._families(self._registry.snapshot())

    def _families(self, snap: _m.Snapshot | None) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        dl = HistogramMetricFamily(
            _m.DOWNLOAD_DURATION, _m.help_text(_m.DOWNLOAD_DURATION), labels=["model_id", "status"]
        )
        if snap is not None:
            for key, (counts, _count, total) in sorted(snap.downloads.items()):
                labels = dict(key)
                cumulative, buckets = 0, []
                for bound, n in zip([*snap.buckets, math.inf], counts, strict=True):
                    cumulative += n
                    buckets.append((_le(bound), cumulative))
                dl.add_metric([labels["model_id"], labels["status"]], buckets, total)
        yield dl

        size = GaugeMetricFamily(_m.CACHE_SIZE, _m.help_text(_m.CACHE_SIZE))
        if snap is not None and snap.cache_size is not None:
            size.add_metric([], snap.cache_size)
        yield size

        gauges = {_m.LOAD_TIME: ["model_id"], _m.MEMORY_USAGE: ["model_id"]}
        for name, label_names in gauges.items():
            family = GaugeMetricFamily(name, _m.help_text(name), labels=label_names)
            if snap is not None:
                table = snap.load_times if name == _m.LOAD_TIME else snap.memory
                for key, value in sorted(table.items()):
                    family.add_metric([dict(key)[n] for n in label_names], value)
            yield family

        counter_labels = {
            _m.VALIDATION_FAILURES: ["model_id", "failure_type"],
            _m.VALIDATIONS: ["model_id", "mode"],
            _m.UPDATE_CHECKS: ["model_id", "result"],
            _m.DEGRADED_LOADS: ["model_id", "mode"],
        }
        for name, label_names in counter_labels.items():
            # prometheus_client adds the _total suffix itself.
            counter = CounterMetricFamily(
                name.removesuffix("_total"), _m.help_text(name), labels=label_names
            )
            if snap is not None:
                for key, value in sorted(snap.counters.get(name, {}).items()):
                    counter.add_metric([dict(key).get(n, "") for n in label_names], value)
            yield counter


def register(registry: CollectorRegistry | None = None) -> CaxtonCollector | None:
    """Adds the collector of the process's metrics to ``registry`` (default:
    ``prometheus_client.REGISTRY``). Idempotent per registry: returns None
    when it was already there."""
    from prometheus_client import REGISTRY

    target = registry if registry is not None else REGISTRY
    with _lock:
        if target in _registered:
            return None
        collector = CaxtonCollector()
        target.register(collector)
        _registered.add(target)
        return collector
