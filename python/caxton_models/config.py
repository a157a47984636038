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
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models._config_keys import (
    _MEMORY_KEYS,
    _MEMORY_ONLY,
    _MEMORY_SCALARS,
    _SECTIONS,
    _TOP_KEYS,
    Parser,
    _endpoints,
    parse_bool,
    parse_duration,
    parse_size,
)
from caxton_models._core import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_RETRY_DELAY_MS,
    DEFAULT_TIMEOUT_SECS,
    MAX_CONNECTIONS,
)
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
#: leaves the core's default (``MAX_CONNECTIONS``, 16, each file ramping
#: up while throughput grows); ``conservative`` is gentle on a mirror;
#: ``aggressive`` lets two large files each run the core's per-file maximum.
STRATEGY_CONNECTIONS: dict[str, int | None] = {
    "conservative": 2,
    "adaptive": None,
    "aggressive": 2 * MAX_CONNECTIONS,
}
#: The core's own defaults, read from it (rust/src/download/options.rs,
#: rust/src/http/retry.rs) so that the config's defaults are the engine's.
ENGINE_CHUNK_KB = DEFAULT_CHUNK_BYTES // 1024
ENGINE_RETRY_DELAY_MS = DEFAULT_RETRY_DELAY_MS
ENGINE_TIMEOUT_S = DEFAULT_TIMEOUT_SECS
#: The embedder's rows per batch (runtime/embedder.py DEFAULT_MAX_BATCH).
ENGINE_BATCH_SIZE = 256

# --------------------------------------------------------------------------- dataclasses


def _update_strategy(c: dict[str, Any], file: str) -> None:
    """``auto_update: true`` is the ``automatic`` strategy; saying both, in
    contradiction, is refused rather than one silently winning."""
    strategy = c.get("update_strategy")
    if strategy is None:
        c["update_strategy"] = "automatic" if c.get("auto_update") else "notify"
    elif "auto_update" in c and c["auto_update"] != (strategy == "automatic"):
        raise ConfigError(
            f"memory.model_cache.auto_update: {str(c['auto_update']).lower()} contradicts "
            f"update_strategy: {strategy} (auto_update: true means update_strategy: automatic); "
            "keep only update_strategy",
            key="memory.model_cache.auto_update",
            file=file,
        )
    else:
        c["auto_update"] = strategy == "automatic"


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
    #: manual, notify, automatic, security or staged (see acquire/_updates.py).
    update_strategy: str = "notify"
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
    request_timeout: float = ENGINE_TIMEOUT_S
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
    #: ``"keyword"``: the fallback chain ends in BM25 keyword vectors, not an error.
    degraded: str | None = None
    degraded_language: str = "english"
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


def hf_hub_cache_dir() -> Path:
    """The Hugging Face cache as huggingface_hub finds it: ``HF_HUB_CACHE``,
    else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``. Only ever read (acquire/_hfcache.py)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "huggingface" / "hub"


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


def _sections(
    ctx: _Ctx, top: Mapping[str, Any], memory: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each section, from the top level and from under ``memory`` (which wins)."""
    sections: dict[str, dict[str, Any]] = {}
    for name, schema in _SECTIONS.items():
        merged: dict[str, Any] = {}
        if name not in _MEMORY_ONLY:
            merged.update(_section(ctx, _mapping(ctx, top.get(name), name), schema, f"{name}."))
        under = _mapping(ctx, memory.get(name), f"memory.{name}")
        merged.update(_section(ctx, under, schema, f"memory.{name}."))
        sections[name] = merged
    return sections


def _models(
    ctx: _Ctx, top: Mapping[str, Any], memory: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
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
    return models


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
    sections = _sections(ctx, top, memory)
    models = _models(ctx, top, memory)
    base = file.parent if file else None
    c = sections["model_cache"]
    directory = _expand_dir(c.pop("directory"), base) if "directory" in c else default_cache_dir()
    if "max_size_gb" in c:
        c["max_size_bytes"] = c.pop("max_size_gb")
    if "pinned_models" in c:
        c["pinned_models"] = tuple(c["pinned_models"])
    _update_strategy(c, ctx.where)
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
        offline = env_offline()
        endpoint = env_endpoint()
        if endpoint:
            try:
                d["endpoints"] = _endpoints(endpoint)
            except ValueError as e:
                raise ConfigError(
                    f"environment variable HF_ENDPOINT: {e}",
                    key="HF_ENDPOINT",
                    file="<environment>",
                ) from None
        token = env_token()

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
    file = Path(path).expanduser() if path is not None else find_config_file()
    if file is None:
        return parse_config(None, None, environ=environ)
    # Only now: a process with no caxton.yaml (the common case) need not load
    # the YAML parser on its way to the first vector.
    import yaml

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


# The Hub's two variables, read here only (and at call time: a process may set them after
# import). An empty or blank value counts as unset.
def env_endpoint() -> str | None:
    """``HF_ENDPOINT``: the endpoint every Hub client uses first."""
    return os.environ.get("HF_ENDPOINT", "").strip() or None


def env_token() -> str | None:
    """``HF_TOKEN``: the token sent to the endpoints that may see it."""
    return os.environ.get("HF_TOKEN") or None


def env_offline() -> bool:
    """``CAXTON_OFFLINE`` or ``HF_HUB_OFFLINE`` set true: no request leaves the
    process. Unset or blank is false; a value that is not a boolean is a
    ``ConfigError`` naming the variable, for the config and the Hub client alike."""
    return bool(_env_bool("CAXTON_OFFLINE")) or bool(_env_bool("HF_HUB_OFFLINE"))
