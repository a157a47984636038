"""caxton.yaml parsing, discovery and environment overrides."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from caxton_models import _core
from caxton_models.acquire.hub import HubClient
from caxton_models.config import (
    STRATEGY_CONNECTIONS,
    DownloadConfig,
    EmbeddingConfig,
    MonitoringConfig,
    default_cache_dir,
    find_config_file,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from caxton_models.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(tmp_path: Path, text: str, name: str = "caxton.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.source is None
    assert cfg.embedding_model == "all-MiniLM-L6-v2"
    assert cfg.cache.cleanup_policy == "lru"
    assert cfg.cache.max_size_bytes == 5 * 10**9
    assert cfg.cache.max_models == 10
    assert cfg.cache.validation_interval == 24 * 3600
    assert cfg.download.max_concurrent == 3
    assert not cfg.offline
    # The autouse fixture points XDG_CACHE_HOME at a temp home.
    assert cfg.cache.directory == default_cache_dir()
    assert cfg.cache.directory.parts[-2:] == ("caxton", "models")


def test_default_cache_dir_honours_xdg_and_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "caxton" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "caxton" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/not/allowed")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "caxton" / "models"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    user = Path(str(tmp_path / "cfg")) / "caxton"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert find_config_file() is None
    user.mkdir(parents=True)
    write(user, "memory: {embedding_model: all-mpnet-base-v2}\n")
    assert find_config_file() == user / "caxton.yaml"
    local = write(cwd, "memory: {embedding_model: multilingual-e5-small}\n")
    assert find_config_file() == local
    explicit = write(tmp_path, "memory: {embedding_model: bundled-mini}\n", "x.yaml")
    monkeypatch.setenv("CAXTON_CONFIG", str(explicit))
    assert find_config_file() == explicit
    assert load_config().embedding_model == "bundled-mini"
    monkeypatch.setenv("CAXTON_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="CAXTON_CONFIG"):
        find_config_file()


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "memory:\n  model_cache:\n    max_size_gigs: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    e = exc.value
    assert e.key == "memory.model_cache.max_size_gigs"
    assert str(p) in str(e)
    assert "max_size_gb" in str(e)  # difflib suggestion
    assert "cleanup_policy" in str(e)  # the valid keys are listed


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'memory'"):
        load_config(write(tmp_path, "memroy: {}\n"))


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        (
            "memory: {model_cache: {cleanup_policy: random}}",
            "memory.model_cache.cleanup_policy",
            "lru, fifo, manual",
        ),
        ("memory: {fallback_strategy: loose}", "memory.fallback_strategy", "auto, manual, strict"),
        (
            "memory: {model_cache: {validation_interval: soon}}",
            "memory.model_cache.validation_interval",
            "24h",
        ),
        (
            "memory: {model_cache: {max_size_gb: -1}}",
            "memory.model_cache.max_size_gb",
            "out of range",
        ),
        ("memory: {model_cache: {max_models: 0}}", "memory.model_cache.max_models", "whole number"),
        ("memory: {download: {enabled: maybe}}", "memory.download.enabled", "true or false"),
        ("download: {strategy: fast}", "download.strategy", "adaptive, conservative, aggressive"),
        ("download: {source: ftp://x}", "download.source", "huggingface"),
        ("embedding: {batch_size: 0}", "embedding.batch_size", "whole number"),
        ("memory: {backend: sqlite}", "memory.backend", "embedded"),
        ("memory: {fallback_models: all-MiniLM-L6-v2}", "memory.fallback_models", "list"),
        ("memory: [1, 2]", "memory", "mapping"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, key: str, needle: str) -> None:
    p = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert exc.value.key == key
    assert needle in str(exc.value)
    assert str(p) in str(exc.value)


def test_invalid_yaml_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "memory: [unclosed\n"))
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    p = write(tmp_path, "memory: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(p)


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "memory: {model_cache: {directory: /from/file}}\n")
    monkeypatch.setenv("CAXTON_CACHE_DIR", "~/envcache")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINEL_secret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(p)
    assert cfg.cache.directory == Path("~/envcache").expanduser()
    assert cfg.endpoints == ("http://127.0.0.1:1234",)
    assert cfg.token == "hf_SENTINEL_secret"
    assert "hf_SENTINEL" not in repr(cfg)  # never printed
    assert cfg.offline and not cfg.downloads_allowed
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("CAXTON_OFFLINE", "false")
    assert not load_config(p).offline
    monkeypatch.setenv("CAXTON_OFFLINE", "perhaps")
    with pytest.raises(ConfigError, match="CAXTON_OFFLINE"):
        load_config(p)


def test_relative_directory_is_relative_to_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "memory: {model_cache: {directory: models}}\n")
    assert load_config(p).cache.directory == tmp_path / "models"


def test_download_section_merging(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "download: {max_concurrent: 5, chunk_size_kb: 256}\n"
        "memory: {download: {max_concurrent: 2}, model_cache: {download_timeout: 45m}}\n",
    )
    cfg = load_config(p)
    assert cfg.download.max_concurrent == 2  # memory.* wins
    assert cfg.download.chunk_size_kb == 256
    assert cfg.download.timeout_minutes == 45


def test_mirror_source_becomes_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "download: {source: 'https://mirror.example/'}\n")
    # HF_ENDPOINT (set by the test fixture) overrides the file, as documented.
    assert load_config(p).endpoints == ("http://127.0.0.1:9",)
    monkeypatch.delenv("HF_ENDPOINT")
    assert load_config(p).endpoints == ("https://mirror.example",)


def test_user_models_validated_with_file_in_message(tmp_path: Path) -> None:
    p = write(tmp_path, "models:\n  mine:\n    model_id: org/x\n    dimension: 384\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "dimensions" in str(exc.value) and str(p) in str(exc.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("500ms", 0.5),
        ("7d", 604800),
        ("1w", 604800),
        (60, 60),
        ("2.5h", 9000),
        ("45", 45),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "h", "24x", "-1h", "1h junk", True, None, float("nan"), "1h-"]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "unit", "size"),
    [
        ("5GB", 1, 5 * 10**9),
        ("5GiB", 1, 5 * 2**30),
        ("512MiB", 1, 512 * 2**20),
        (2.0, 10**9, 2 * 10**9),
        ("1.5G", 1, 1_500_000_000),
        ("100", 1000, 100_000),
        ("0", 1, 0),
    ],
)
def test_parse_size(text: object, unit: int, size: int) -> None:
    assert parse_size(text, unit=unit) == size


@pytest.mark.parametrize("text", ["", "GB", "5 XB", "-1GB", "1e400", True, [1]])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# ---------------------------------------------------------------- the spec's three examples


def test_example_dev_loads_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(EXAMPLES / "caxton-dev.yaml")
    assert cfg.embedding_model == "all-MiniLM-L6-v2"
    assert cfg.cache.directory == Path.home() / ".cache" / "caxton" / "models"
    assert cfg.cache.max_size_bytes == 2 * 10**9
    assert cfg.cache.auto_download and cfg.cache.validation_on_startup
    assert cfg.download.timeout_minutes == 10
    assert cfg.download.retry_attempts == 3
    assert cfg.downloads_allowed


def test_example_prod_loads_unchanged() -> None:
    cfg = load_config(EXAMPLES / "caxton-prod.yaml")
    assert cfg.embedding_model == "all-mpnet-base-v2"
    assert cfg.fallback_models == ("all-MiniLM-L6-v2", "bundled-mini")
    assert cfg.cache.directory == Path("/opt/caxton/models")
    assert cfg.cache.max_size_bytes == 10 * 10**9
    assert cfg.cache.validation_interval == 6 * 3600
    assert cfg.download.max_concurrent == 2
    assert cfg.download.retry_attempts == 5
    assert cfg.monitoring.alert_on_failures and cfg.monitoring.performance_logging


def test_example_offline_loads_unchanged() -> None:
    cfg = load_config(EXAMPLES / "caxton-offline.yaml")
    assert cfg.embedding_model == "bundled-mini"
    assert cfg.cache.directory == Path("/data/caxton/models")
    assert not cfg.cache.auto_download and cfg.cache.bundled_models_only
    assert cfg.fallback_strategy == "strict"
    assert not cfg.download.enabled and not cfg.downloads_allowed


def test_example_full_lists_every_key() -> None:
    from caxton_models import _config_keys as c

    data = yaml.safe_load((EXAMPLES / "caxton-full.yaml").read_text())
    assert set(data["memory"]["model_cache"]) == set(c._CACHE_KEYS)
    # endpoints has no default (a commented line shows it); parallel_downloads is
    # memory.model_cache's, accepted here too.
    assert set(data["download"]) | {"endpoints", "parallel_downloads"} == set(c._DOWNLOAD_KEYS)
    assert set(data["memory"]["monitoring"]) == set(c._MONITORING_KEYS)
    assert set(data["memory"]["loaded_models"]) == set(c._LOADED_KEYS)
    assert set(data["embedding"]) == set(c._EMBEDDING_KEYS)
    cfg = parse_config(data, EXAMPLES / "caxton-full.yaml", environ=False)
    assert cfg.cache.cleanup_unused_after == 30 * 86400
    # The example states the defaults: the parsed file equals the default config.
    assert cfg.download == DownloadConfig()
    assert cfg.embedding == EmbeddingConfig() and cfg.monitoring == MonitoringConfig()
    assert "my-e5-base" in cfg.models


@pytest.mark.parametrize(
    ("text", "strategy", "auto"),
    [
        ("{}", "notify", False),
        ("{auto_update: true}", "automatic", True),
        ("{update_strategy: staged}", "staged", False),
        ("{update_strategy: automatic}", "automatic", True),
        ("{update_strategy: security, auto_update: false}", "security", False),
    ],
)
def test_update_strategy(tmp_path: Path, text: str, strategy: str, auto: bool) -> None:
    cfg = load_config(write(tmp_path, f"memory: {{model_cache: {text}}}\n"))
    assert (cfg.cache.update_strategy, cfg.cache.auto_update) == (strategy, auto)


def test_update_strategy_refused_when_it_contradicts_auto_update(tmp_path: Path) -> None:
    text = "memory: {model_cache: {update_strategy: notify, auto_update: true}}\n"
    with pytest.raises(ConfigError, match="contradicts") as e:
        load_config(write(tmp_path, text))
    assert e.value.key == "memory.model_cache.auto_update"
    with pytest.raises(ConfigError, match="manual, notify, automatic, security, staged"):
        load_config(write(tmp_path, "memory: {model_cache: {update_strategy: sometimes}}\n"))


def test_the_download_defaults_are_the_engines() -> None:
    """The engine's defaults have one home, the Rust core (download/options.rs,
    http/retry.rs); the config and the Hub client read them from ``_core``."""
    dl = DownloadConfig()
    assert dl.chunk_size_kb * 1024 == _core.DEFAULT_CHUNK_BYTES == 8 << 20
    assert dl.retry_delay_ms == _core.DEFAULT_RETRY_DELAY_MS == 500
    assert dl.request_timeout == _core.DEFAULT_TIMEOUT_SECS == 30.0
    assert dl.connection_budget is None  # adaptive: the core's own budget
    assert STRATEGY_CONNECTIONS["aggressive"] == 2 * _core.MAX_CONNECTIONS == 32
    hub = inspect.signature(HubClient).parameters
    assert hub["timeout"].default == _core.DEFAULT_TIMEOUT_SECS
    assert hub["retry_delay"].default * 1000 == _core.DEFAULT_RETRY_DELAY_MS


@pytest.mark.parametrize("fn", [_core.download, _core.download_many, _core.http_request])
def test_the_cores_signatures_spell_its_constants(fn: Callable[..., object]) -> None:
    """PyO3 signatures must spell a default as a literal (a constant's path shows
    as ``...`` to Python and to stubtest): they must still be the constants."""
    params = inspect.signature(fn).parameters
    assert params["timeout"].default == _core.DEFAULT_TIMEOUT_SECS
    assert params["retry_delay"].default * 1000 == _core.DEFAULT_RETRY_DELAY_MS
    if fn is not _core.http_request:  # a request has its own, fewer retries
        assert params["retries"].default == _core.DEFAULT_RETRIES
