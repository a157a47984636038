"""``caxton.yaml`` and the environment, read once into frozen dataclasses.

Where the file is found, first match wins: ``$CAXTON_CONFIG`` (must exist),
``./caxton.yaml``, then ``<user config dir>/caxton/caxton.yaml``. No file means
the defaults. The environment then overrides the file: ``CAXTON_CACHE_DIR``,
``CAXTON_OFFLINE`` / ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN``.

Every key of the spec's examples is accepted; ``download``, ``monitoring``,
``embedding`` and ``models`` may sit at the top level or under ``memory`` (the
spec shows both; ``memory.*`` wins per key). An unknown key or a bad value is a
:class:`ConfigError` naming the key, the file and the valid choices, with the
closest known key suggested. Durations are ``"24h"``, ``"30m"``, ``"1h30m"``,
``"90s"``, ``"500ms"``, ``"7d"`` or a number of seconds; sizes are ``"5GB"``,
``"512MiB"`` or a number (in the unit the key names, e.g. ``max_size_gb``).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models.errors import ConfigError

__all__ = [
    "CacheConfig",
    "Config",
    "DownloadConfig",
    "EmbeddingConfig",
    "MonitoringConfig",
    "default_cache_dir",
    "find_config_file",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_ENDPOINT = "https://huggingface.co"

#: ``download.strategy`` -> the connection budget a model's transfer shares
#: among its files (``download.connections`` overrides it). ``adaptive``
#: leaves the core's default (16, each file ramping up while throughput
#: grows); ``conservative`` is gentle on a mirror; ``aggressive`` lets two
#: large files each run the core's per-file maximum of 16.
STRATEGY_CONNECTIONS: dict[str, int | None] = {
    "conservative": 2,
    "adaptive": None,
    "aggressive": 32,
}
#: The core's own defaults, stated here so the config's defaults are the
#: engine's (rust/src/download/options.rs DEFAULT_CHUNK, http.rs Backoff).
ENGINE_CHUNK_KB = 8 * 1024
ENGINE_RETRY_DELAY_MS = 500
#: The embedder's rows per batch (runtime/embedder.py DEFAULT_MAX_BATCH).
ENGINE_BATCH_SIZE = 256

# --------------------------------------------------------------------------- parsers

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_duration(value: object) -> float:
    """Seconds from ``"24h"``, ``"1h30m"``, ``"500ms"``, ``"7d"`` or a number of
    seconds. Raises ``ValueError`` on anything else (negative, NaN, junk)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty duration")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            pos = 0
            seconds = 0.0
            for m in _DURATION_PART.finditer(text):
                if text[pos : m.start()].strip():
                    raise ValueError(f"{value!r} is not a duration like '24h', '30m' or '1h30m'")
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
                pos = m.end()
            if pos == 0 or text[pos:].strip():
                raise ValueError(f"{value!r} is not a duration like '24h', '30m' or '1h30m'")
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative duration")
    return seconds


def parse_size(value: object, *, unit: int = 1) -> int:
    """Bytes from ``"5GB"`` (decimal), ``"5GiB"`` (binary), ``"1.5G"`` or a number
    counted in ``unit`` bytes. Raises ``ValueError`` on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, (int, float)):
        size = float(value) * unit
    elif isinstance(value, str):
        m = _SIZE.match(value)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size like '5GB', '512MiB' or a number")
        factor = _SIZE_UNITS[m.group(2).lower()] if m.group(2) else unit
        size = float(m.group(1)) * factor
    else:
        raise ValueError(f"{value!r} is not a size")
    if not math.isfinite(size) or size < 0 or size > 2**63 - 1:
        raise ValueError(f"{value!r} is out of range")
    return int(size)


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{value!r} is not a boolean (true/false)")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class CacheConfig:
    directory: Path
    max_size_bytes: int | None = 5 * 1000**3
    max_models: int | None = 10
    cleanup_policy: str = "lru"
    validation_interval: float = 24 * 3600.0
    download_timeout: float = 30 * 60.0
    parallel_downloads: int = 3
    auto_download: bool = True
    validation_on_startup: bool = False
    bundled_models_only: bool = False
    update_check_interval: float = 24 * 3600.0
    auto_update: bool = False
    cleanup_unused_after: float | None = None
    temp_max_age: float = 24 * 3600.0
    pinned_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownloadConfig:
    enabled: bool = True
    source: str = "huggingface"
    endpoints: tuple[str, ...] = ()
    strategy: str = "adaptive"
    max_concurrent: int = 3
    connections: int | None = None
    chunk_size_kb: int = ENGINE_CHUNK_KB
    retry_attempts: int = 5
    retry_delay_ms: int = ENGINE_RETRY_DELAY_MS
    timeout_minutes: float = 30.0
    request_timeout: float = 30.0
    compression: bool = False
    allow_pickle: bool = False

    @property
    def connection_budget(self) -> int | None:
        """Connections one model's transfer may use (None: the core's default)."""
        if self.connections is not None:
            return self.connections
        return STRATEGY_CONNECTIONS[self.strategy]


@dataclass(frozen=True)
class MonitoringConfig:
    track_download_metrics: bool = True
    alert_on_failures: bool = False
    #: Consecutive failed downloads of one model before the error is logged.
    alert_threshold: int = 3
    performance_logging: bool = False


@dataclass(frozen=True)
class EmbeddingConfig:
    """Defaults of every Embedder ``caxton_models.load`` builds (``batch_size``
    rows per model call, ``parallel_batches`` calls at once; None: one per
    core) and of :meth:`DynamicBatcher.from_config` (all four)."""

    batch_size: int = ENGINE_BATCH_SIZE
    max_batch_wait_ms: int = 100
    queue_size: int = 1000
    parallel_batches: int | None = None


@dataclass(frozen=True)
class LoadedModelsConfig:
    """The loaded-model manager behind ``caxton_models.load`` (the spec's
    ModelMemoryManager): ``memory.loaded_models`` in caxton.yaml."""

    max_loaded_models: int = 3
    memory_limit_gb: float = 2.0
    eviction_policy: str = "lru"
    preload_models: tuple[str, ...] = ()
    idle_unload: float | None = None


@dataclass(frozen=True)
class Config:
    cache: CacheConfig
    download: DownloadConfig = field(default_factory=DownloadConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    loaded_models: LoadedModelsConfig = field(default_factory=LoadedModelsConfig)
    backend: str = "embedded"
    embedding_model: str = DEFAULT_MODEL
    fallback_models: tuple[str, ...] = ("all-MiniLM-L12-v2", "bundled-mini")
    fallback_strategy: str = "auto"
    allow_dimension_mismatch: bool = False
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    offline: bool = False
    token: str | None = field(default=None, repr=False)
    source: Path | None = None

    @property
    def downloads_allowed(self) -> bool:
        """Whether any network call may be made at all."""
        return not self.offline and self.download.enabled

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.download.endpoints or (DEFAULT_ENDPOINT,)


# --------------------------------------------------------------------------- locations


def _is_posix_xdg() -> bool:
    return sys.platform not in ("darwin", "win32")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/caxton/models`` (``~/.cache/caxton/models``) on Linux and
    other Unixes, the platform cache dir elsewhere; never a temp dir."""
    if _is_posix_xdg():
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
        return base / "caxton" / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("caxton", appauthor=False)) / "models"


def env_cache_dir() -> Path:
    """``CAXTON_CACHE_DIR`` when set, else :func:`default_cache_dir`: the cache a
    process uses when no config says otherwise."""
    env_dir = os.environ.get("CAXTON_CACHE_DIR")
    return _expand_dir(env_dir, None) if env_dir else default_cache_dir()


def user_config_dir() -> Path:
    if _is_posix_xdg():
        xdg = os.environ.get("XDG_CONFIG_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
        return base / "caxton"
    import platformdirs

    return Path(platformdirs.user_config_dir("caxton", appauthor=False))


def find_config_file() -> Path | None:
    env = os.environ.get("CAXTON_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"CAXTON_CONFIG points to {path}, which is not a file: "
                "fix the path or unset CAXTON_CONFIG",
                key="CAXTON_CONFIG",
                file=str(path),
            )
        return path
    for candidate in (Path.cwd() / "caxton.yaml", user_config_dir() / "caxton.yaml"):
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- schema

Parser = Callable[[Any], Any]


def _choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"{value!r}; choose one of: {', '.join(options)}")
        return value

    parse.choices = options  # type: ignore[attr-defined]
    return parse


def _int(lo: int, hi: int = 2**31) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{value!r}; expected a whole number from {lo} to {hi}")
        return value

    return parse


def _opt_int(lo: int) -> Parser:
    inner = _int(lo)

    def parse(value: Any) -> int | None:
        return None if value is None else inner(value)

    return parse


def _float(lo: float) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r}; expected a number >= {lo}")
        if not math.isfinite(value) or value < lo:
            raise ValueError(f"{value!r}; expected a finite number >= {lo}")
        return float(value)

    return parse


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{e}; use e.g. '24h', '30m', '1h30m' or seconds") from None


def _opt_duration(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("never", "off")):
        return None
    return _duration(value)


def _size_gb(value: Any) -> int | None:
    if value is None:
        return None
    return parse_size(value, unit=1000**3)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r}; expected true or false")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r}; expected a non-empty string")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{value!r}; expected a list of model names")
    return tuple(value)


def _endpoints(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"{value!r}; expected a URL or a list of URLs")
    for item in items:
        if not isinstance(item, str) or not re.match(r"^https?://[^/\s]+", item):
            raise ValueError(f"{item!r}; expected an http(s):// URL")
    return tuple(u.rstrip("/") for u in items)


def _compression(value: Any) -> bool:
    if _bool(value):
        raise ValueError(
            "true is not supported: bodies are always fetched uncompressed "
            "(Accept-Encoding: identity), so that the SHA-256 checked while a file streams "
            "covers exactly the bytes that land on disk, and so that a download can resume "
            "at a byte offset (model weights barely compress anyway). Remove the key or set "
            "it to false"
        )
    return False


def _auto_int(lo: int, hi: int) -> Parser:
    inner = _int(lo, hi)

    def parse(value: Any) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            return int(inner(value))
        except ValueError:
            raise ValueError(
                f"{value!r}; expected 'auto' or a whole number from {lo} to {hi}"
            ) from None

    return parse


def _source(value: Any) -> str:
    if isinstance(value, str) and (value == "huggingface" or re.match(r"^https?://", value)):
        return value
    raise ValueError(f"{value!r}; choose one of: huggingface, or a mirror URL (https://...)")


_CACHE_KEYS: dict[str, Parser] = {
    "directory": _str,
    "max_size_gb": _size_gb,
    "max_models": _opt_int(1),
    "cleanup_policy": _choice("lru", "fifo", "manual"),
    "validation_interval": _duration,
    "download_timeout": _duration,
    "parallel_downloads": _int(1, 64),
    "auto_download": _bool,
    "validation_on_startup": _bool,
    "bundled_models_only": _bool,
    "update_check_interval": _duration,
    "auto_update": _bool,
    "cleanup_unused_after": _opt_duration,
    "temp_max_age": _duration,
    "pinned_models": _names,
}
_DOWNLOAD_KEYS: dict[str, Parser] = {
    "enabled": _bool,
    "source": _source,
    "endpoints": _endpoints,
    "strategy": _choice("adaptive", "conservative", "aggressive"),
    "max_concurrent": _int(1, 64),
    "parallel_downloads": _int(1, 64),
    "connections": _opt_int(1),
    # The core's smallest range is 64 KiB: a smaller value would be rounded up.
    "chunk_size_kb": _int(64, 1024 * 1024),
    "retry_attempts": _int(0, 100),
    "retry_delay_ms": _int(0, 10 * 60 * 1000),
    "timeout_minutes": _float(0.01),
    "request_timeout": _duration,
    "compression": _compression,
    "allow_pickle": _bool,
}
_MONITORING_KEYS: dict[str, Parser] = {
    "track_download_metrics": _bool,
    "alert_on_failures": _bool,
    "alert_threshold": _int(1, 1_000_000),
    "performance_logging": _bool,
}
_EMBEDDING_KEYS: dict[str, Parser] = {
    "batch_size": _int(1, 1 << 20),
    "max_batch_wait_ms": _int(0, 60_000),
    "queue_size": _int(1, 1 << 24),
    "parallel_batches": _auto_int(1, 256),
}
_LOADED_KEYS: dict[str, Parser] = {
    "max_loaded_models": _int(1, 1 << 16),
    "memory_limit_gb": _float(0.001),
    "eviction_policy": _choice("lru", "fifo", "manual"),
    "preload_models": _names,
    "idle_unload": _opt_duration,
}
_MEMORY_SCALARS: dict[str, Parser] = {
    "backend": _choice("embedded"),
    "embedding_model": _str,
    "fallback_models": _names,
    "fallback_strategy": _choice("auto", "manual", "strict"),
    "allow_dimension_mismatch": _bool,
}
_SECTIONS = {
    "model_cache": _CACHE_KEYS,
    "download": _DOWNLOAD_KEYS,
    "monitoring": _MONITORING_KEYS,
    "embedding": _EMBEDDING_KEYS,
    "loaded_models": _LOADED_KEYS,
}
_MEMORY_ONLY = ("model_cache", "loaded_models")
_MEMORY_KEYS = [*_MEMORY_SCALARS, *_SECTIONS, "models"]
_TOP_KEYS = ["memory", "download", "monitoring", "embedding", "models"]


class _Ctx:
    def __init__(self, file: Path | None) -> None:
        self.file = file

    @property
    def where(self) -> str:
        return str(self.file) if self.file else "<config>"

    def unknown(self, key: str, prefix: str, valid: list[str]) -> ConfigError:
        dotted = f"{prefix}{key}"
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
        return ConfigError(
            f"unknown key '{dotted}' in {self.where}.{hint} Valid keys here: {', '.join(valid)}.",
            key=dotted,
            file=self.where,
            choices=list(valid),
        )

    def bad(self, dotted: str, why: str) -> ConfigError:
        return ConfigError(
            f"bad value for '{dotted}' in {self.where}: {why}", key=dotted, file=self.where
        )


def _mapping(ctx: _Ctx, value: Any, dotted: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.bad(dotted, f"expected a mapping of keys, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise ctx.bad(dotted, f"key {k!r} is not a string")
    return value


def _section(
    ctx: _Ctx, raw: dict[str, Any], schema: dict[str, Parser], prefix: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        parser = schema.get(key)
        if parser is None:
            raise ctx.unknown(key, prefix, list(schema))
        try:
            out[key] = parser(value)
        except ValueError as e:
            raise ctx.bad(prefix + key, str(e)) from None
    return out


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return parse_bool(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a boolean: use 1/0, true/false, yes/no",
            key=name,
            file="<environment>",
            choices=["1", "0", "true", "false", "yes", "no"],
        ) from None


def _expand_dir(value: str, base: Path | None) -> Path:
    path = Path(os.path.expandvars(value)).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path


def parse_config(data: Any, file: Path | None = None, *, environ: bool = True) -> Config:
    """Build a :class:`Config` from parsed YAML (``None`` = empty file)."""
    ctx = _Ctx(file)
    top = _mapping(ctx, data, "<top level>")
    for key in top:
        if key not in _TOP_KEYS:
            raise ctx.unknown(key, "", _TOP_KEYS)
    memory = _mapping(ctx, top.get("memory"), "memory")
    for key in memory:
        if key not in _MEMORY_KEYS:
            raise ctx.unknown(key, "memory.", _MEMORY_KEYS)

    scalars = _section(
        ctx, {k: v for k, v in memory.items() if k in _MEMORY_SCALARS}, _MEMORY_SCALARS, "memory."
    )
    sections: dict[str, dict[str, Any]] = {}
    for name, schema in _SECTIONS.items():
        merged: dict[str, Any] = {}
        if name not in _MEMORY_ONLY:
            merged.update(_section(ctx, _mapping(ctx, top.get(name), name), schema, f"{name}."))
        merged.update(
            _section(
                ctx, _mapping(ctx, memory.get(name), f"memory.{name}"), schema, f"memory.{name}."
            )
        )
        sections[name] = merged

    models: dict[str, dict[str, Any]] = {}
    for where, raw_models in (
        ("models", top.get("models")),
        ("memory.models", memory.get("models")),
    ):
        for mname, mval in _mapping(ctx, raw_models, where).items():
            models[mname] = _mapping(ctx, mval, f"{where}.{mname}")
    if models:
        # Validated here so the error names this file; the registry re-reads them.
        from caxton_models.registry import spec_from_mapping

        for mname, mval in models.items():
            spec_from_mapping(mname, mval, where=f"{ctx.where}: models.{mname}")

    base = file.parent if file else None
    c = sections["model_cache"]
    directory = _expand_dir(c.pop("directory"), base) if "directory" in c else default_cache_dir()
    if "max_size_gb" in c:
        c["max_size_bytes"] = c.pop("max_size_gb")
    if "pinned_models" in c:
        c["pinned_models"] = tuple(c["pinned_models"])
    d = sections["download"]
    # The spec uses three names for the same knob; the most specific wins.
    parallel = d.pop("parallel_downloads", None)
    if parallel is not None:
        d.setdefault("max_concurrent", parallel)
    elif "max_concurrent" not in d and "parallel_downloads" in c:
        d["max_concurrent"] = c["parallel_downloads"]
    if "download_timeout" in c and "timeout_minutes" not in d:
        d["timeout_minutes"] = c["download_timeout"] / 60.0
    if d.get("source", "huggingface") != "huggingface" and "endpoints" not in d:
        d["endpoints"] = (str(d["source"]).rstrip("/"),)

    offline = False
    token = None
    if environ:
        if os.environ.get("CAXTON_CACHE_DIR"):
            directory = env_cache_dir()
        offline = bool(_env_bool("CAXTON_OFFLINE")) or bool(_env_bool("HF_HUB_OFFLINE"))
        endpoint = os.environ.get("HF_ENDPOINT")
        if endpoint:
            try:
                d["endpoints"] = _endpoints(endpoint)
            except ValueError as e:
                raise ConfigError(
                    f"environment variable HF_ENDPOINT: {e}",
                    key="HF_ENDPOINT",
                    file="<environment>",
                ) from None
        token = os.environ.get("HF_TOKEN") or None

    return Config(
        cache=CacheConfig(directory=directory, **c),
        download=DownloadConfig(**d),
        monitoring=MonitoringConfig(**sections["monitoring"]),
        embedding=EmbeddingConfig(**sections["embedding"]),
        loaded_models=LoadedModelsConfig(**sections["loaded_models"]),
        models=models,
        offline=offline,
        token=token,
        source=file,
        **scalars,
    )


def load_config(path: str | os.PathLike[str] | None = None, *, environ: bool = True) -> Config:
    """Read ``path`` (or the file :func:`find_config_file` finds) and apply the
    environment. ``yaml.safe_load`` only: no tags, no code."""
    import yaml

    file = Path(path).expanduser() if path is not None else find_config_file()
    if file is None:
        return parse_config(None, None, environ=environ)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror}", key="", file=str(file)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not UTF-8 text", key="", file=str(file)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{file} is not valid YAML: {e}", key="", file=str(file)) from None
    return parse_config(data, file, environ=environ)
