"""The grammar of ``caxton.yaml``: durations, sizes and booleans, and the
parser of every key (its type, range and choices), section by section."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

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


def _degraded(value: Any) -> str | None:
    # YAML reads a bare `off`/`no` as false.
    if value is None or value is False or (isinstance(value, str) and value in ("off", "none")):
        return None
    if value == "keyword":
        return "keyword"
    raise ValueError(f"{value!r}; choose one of: keyword, off")


def _keyword_language(value: Any) -> str:
    from caxton_models._core import Bm25

    if not isinstance(value, str) or value not in Bm25.languages():
        raise ValueError(f"{value!r}; choose one of: {', '.join(Bm25.languages())}")
    return value


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
    "update_strategy": _choice("manual", "notify", "automatic", "security", "staged"),
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
    "degraded": _degraded,
    "degraded_language": _keyword_language,
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
