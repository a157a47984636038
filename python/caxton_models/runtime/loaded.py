"""The loaded-model manager (the spec's ModelMemoryManager).

Models load lazily on first use, at most once however many threads ask at the
same moment (single flight), and stay loaded under two limits:
``max_loaded_models`` and ``memory_limit_gb`` (each model's estimated resident
size). Past a limit the least recently used model (or the oldest, under
``fifo``) is dropped; ``manual`` never drops one by itself. Models idle for
longer than ``idle_unload_s`` are unloaded by a background reaper.

Dropping a model only removes the manager's reference: a caller still holding
the :class:`~caxton_models.runtime.embedder.Embedder` keeps a working object, and its
memory is freed when the last reference goes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from caxton_models import metrics as _metrics
from caxton_models.config import LoadedModelsConfig
from caxton_models.errors import ConfigError

__all__ = ["EvictionPolicy", "LoadedModel", "ModelMemoryManager"]

log = logging.getLogger(__name__)

EvictionPolicy = Literal["lru", "fifo", "manual"]
_POLICIES = ("lru", "fifo", "manual")


class LoadedModel(Protocol):
    """What the manager needs from a model (an Embedder satisfies it)."""

    @property
    def memory_bytes(self) -> int: ...

    def embed(self, texts: Sequence[str], **kwargs: Any) -> npt.NDArray[np.float32]: ...


@dataclass
class _Entry:
    model: Any
    loaded_at: float
    last_used: float
    memory_bytes: int
    uses: int = 0


class _Flight:
    """One load in progress; late callers wait on it instead of loading again."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.model: Any = None
        self.error: BaseException | None = None


def _record_load(name: str, model: Any, wall_seconds: float) -> None:
    """The load time the model measured itself (session creation), else the
    loader's wall time, which may include a download."""
    try:
        own_ms = getattr(model, "load_time_ms", None)
        seconds = own_ms / 1000.0 if isinstance(own_ms, int | float) else wall_seconds
        _metrics.set_load_time(str(getattr(model, "model_id", None) or name), seconds)
    except Exception as e:  # a model with odd attributes still loads
        log.debug("load time of %s not recorded: %s", name, e)


class ModelMemoryManager:
    def __init__(
        self,
        loader: Callable[[str], Any] | None = None,
        *,
        max_loaded_models: int = 3,
        memory_limit_gb: float = 2.0,
        eviction_policy: EvictionPolicy = "lru",
        preload_models: Iterable[str] = (),
        idle_unload_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_loaded_models < 1:
            raise ConfigError(
                f"max_loaded_models must be at least 1, got {max_loaded_models}",
                key="max_loaded_models",
            )
        if memory_limit_gb <= 0:
            raise ConfigError(
                f"memory_limit_gb must be positive, got {memory_limit_gb}",
                key="memory_limit_gb",
            )
        if eviction_policy not in _POLICIES:
            raise ConfigError(
                f"eviction_policy {eviction_policy!r} is not one of {', '.join(_POLICIES)}",
                key="eviction_policy",
            )
        self._loader = loader
        self.max_loaded_models = max_loaded_models
        self.memory_limit_bytes = int(memory_limit_gb * 2**30)
        self.eviction_policy = eviction_policy
        self.idle_unload_s = idle_unload_s
        self._clock = clock
        self._lock = threading.Lock()
        self._models: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self.loads = 0  # how many times the loader ran (tests check single flight)
        self.evictions: list[str] = []
        self._stop = threading.Event()
        _metrics.watch_memory(self)  # weakly: caxton_model_memory_usage_bytes reads it
        self._reaper: threading.Thread | None = None
        if idle_unload_s is not None:
            self._reaper = threading.Thread(
                target=self._reap, name="caxton-idle-unload", daemon=True
            )
            self._reaper.start()
        self.preload(preload_models)

    @classmethod
    def from_config(
        cls, cfg: LoadedModelsConfig, loader: Callable[[str], Any] | None = None
    ) -> ModelMemoryManager:
        """A manager with the limits of ``memory.loaded_models`` (preloading is
        the caller's: it needs the whole load path)."""
        return cls(
            loader,
            max_loaded_models=cfg.max_loaded_models,
            memory_limit_gb=cfg.memory_limit_gb,
            eviction_policy=cfg.eviction_policy,  # type: ignore[arg-type]
            idle_unload_s=cfg.idle_unload,
        )

    # ------------------------------------------------------------------ loading

    def get(self, name: str, loader: Callable[[], Any] | None = None) -> Any:
        """The loaded model, loading it first if needed (once, whoever asks):
        with ``loader()`` when given, else the manager's ``loader(name)``."""
        with self._lock:
            entry = self._models.get(name)
            if entry is not None:
                self._touch(name, entry)
                return entry.model
            flight = self._flights.get(name)
            leader = flight is None
            if flight is None:
                flight = self._flights[name] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.model
        started = time.perf_counter()
        try:
            if loader is not None:
                model = loader()
            elif self._loader is not None:
                model = self._loader(name)
            else:
                raise LookupError(f"{name!r} is not loaded and this manager has no loader")
        except BaseException as e:
            flight.error = e
            with self._lock:
                del self._flights[name]
            flight.done.set()
            raise
        _record_load(name, model, time.perf_counter() - started)
        now = self._clock()
        with self._lock:
            self.loads += 1
            mem = int(getattr(model, "memory_bytes", 0) or 0)
            self._models[name] = _Entry(model, now, now, mem)
            del self._flights[name]
            self._evict_over_limits(keep=name)
        flight.model = model
        flight.done.set()
        return model

    def preload(self, names: Iterable[str]) -> None:
        """Loads these models now (the spec's preload_models)."""
        for name in names:
            self.get(name)

    def embed(self, name: str, texts: Sequence[str], **kwargs: Any) -> npt.NDArray[np.float32]:
        """Thread-safe embedding with the named model, loading it if needed."""
        model = self.get(name)
        with self._lock:
            entry = self._models.get(name)
            if entry is not None and entry.model is model:
                entry.uses += 1
        try:
            return model.embed(texts, **kwargs)
        finally:
            with self._lock:
                entry = self._models.get(name)
                if entry is not None and entry.model is model:
                    entry.uses -= 1
                    entry.last_used = self._clock()

    # ------------------------------------------------------------------ unloading

    def _touch(self, name: str, entry: _Entry) -> None:
        entry.last_used = self._clock()
        if self.eviction_policy == "lru":
            self._models.move_to_end(name)

    def _evict_over_limits(self, keep: str) -> None:
        """Drops models (never `keep`) until both limits hold. Lock held."""
        if self.eviction_policy == "manual":
            if self._over_limits():
                log.warning(
                    "loaded models exceed the limits (%d models, %.2f GB) and the eviction "
                    "policy is manual: unload some with ModelMemoryManager.unload()",
                    len(self._models),
                    self.memory_bytes / 2**30,
                )
            return
        while self._over_limits():
            # OrderedDict order: LRU keeps it by use, FIFO by load.
            victim = next((n for n in self._models if n != keep), None)
            if victim is None:
                break
            del self._models[victim]
            self.evictions.append(victim)
            log.info("unloaded model %s (over the loaded-model limits)", victim)

    def _over_limits(self) -> bool:
        return (
            len(self._models) > self.max_loaded_models
            or self.memory_bytes > self.memory_limit_bytes
        )

    def unload(self, name: str) -> bool:
        """Drops a loaded model; False if it was not loaded."""
        with self._lock:
            return self._models.pop(name, None) is not None

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unloads models unused for longer than ``idle_unload_s`` and not
        embedding right now; returns their names."""
        if self.idle_unload_s is None:
            return []
        now = self._clock() if now is None else now
        with self._lock:
            idle = [
                n
                for n, e in self._models.items()
                if e.uses == 0 and now - e.last_used > self.idle_unload_s
            ]
            for n in idle:
                del self._models[n]
                self.evictions.append(n)
        return idle

    def _reap(self) -> None:
        assert self.idle_unload_s is not None
        period = max(0.05, min(self.idle_unload_s / 2, 30.0))
        while not self._stop.wait(period):
            for name in self.unload_idle():
                log.info("unloaded model %s (idle for %.0f s)", name, self.idle_unload_s)

    # ------------------------------------------------------------------ status

    @property
    def memory_bytes(self) -> int:
        return sum(e.memory_bytes for e in self._models.values())

    def memory_by_model(self) -> dict[str, int]:
        """Estimated bytes of each loaded model, by the model id it reports
        (what ``caxton_model_memory_usage_bytes`` shows)."""
        with self._lock:
            entries = [(n, e.model, e.memory_bytes) for n, e in self._models.items()]
        out: dict[str, int] = {}
        for name, model, nbytes in entries:
            model_id = str(getattr(model, "model_id", None) or name)
            out[model_id] = out.get(model_id, 0) + nbytes
        return out

    def loaded(self) -> list[str]:
        """Names of loaded models, next to be evicted first."""
        with self._lock:
            return list(self._models)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._models

    def close(self) -> None:
        """Stops the idle reaper and drops every model."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join()
        with self._lock:
            self._models.clear()

    def __enter__(self) -> ModelMemoryManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
