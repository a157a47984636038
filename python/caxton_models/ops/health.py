"""Health checks of the model system (the spec's "Model System Health").

``check_health()`` runs, in order:

- ``cache_integrity``: quick validation (files present, sizes, manifest) of
  every installed model; a failure names the model and the repair command.
- ``cache_size`` and ``disk_space``: the spec's alerting conditions that are
  cheap to see: the cache over ``max_size_gb``/``max_models``, little free disk.
- ``download_connectivity``: one ``HEAD`` per configured endpoint with a short
  timeout, through the Rust core like every other request. Offline mode (or
  ``network=False``) reports ``skipped``, never a failure.
- ``degraded_mode``: a ``warn`` when a load in this process ended in
  keyword-only vectors (``caxton_model_degraded_loads_total``).
- ``model_loading``: the default model if it is installed, else the bundled
  model (a ``warn``: vectors then come from the int8 stand-in). Loaded from
  disk only: a health check never downloads. When neither loads and
  ``degraded: keyword`` is set, a ``warn``: load() serves BM25 keyword vectors.
- ``embedding``: "Hello world" through the loaded model: the right number of
  dimensions, finite, not zero (in degraded mode: at least one keyword term).

Each check has a status (``ok``, ``warn``, ``fail``, ``skipped``), a detail
that says what to do, and how long it took. No detail carries a token.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from caxton_models.config import env_token
from caxton_models.errors import scrub_tokens

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config

__all__ = ["CheckResult", "HealthReport", "Status", "check_health", "lines"]

Status = Literal["ok", "warn", "fail", "skipped"]

#: Free disk below this is a warning: a model download needs room to stage.
LOW_DISK_BYTES = 1 << 30


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 4),
            "data": self.data,
        }


@dataclass
class HealthReport:
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def status(self) -> Status:
        """The worst status: fail, then warn; skipped checks count as ok."""
        seen = {c.status for c in self.checks}
        if "fail" in seen:
            return "fail"
        return "warn" if "warn" in seen else "ok"

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [c.to_json() for c in self.checks]}


class _Check:
    """Times one check; a check that raises becomes a ``fail`` with the reason."""

    def __init__(self, report: HealthReport, name: str, scrub: Callable[[str], str]) -> None:
        self.report = report
        self.name = name
        self.scrub = scrub

    def run(self, fn: Callable[[], tuple[Status, str, dict[str, Any]]]) -> CheckResult:
        t0 = time.monotonic()
        try:
            status, detail, data = fn()
        except Exception as e:
            status, detail, data = "fail", f"{type(e).__name__}: {e}", {}
        result = CheckResult(self.name, status, self.scrub(detail), time.monotonic() - t0, data)
        self.report.checks.append(result)
        return result


def check_health(
    config: Config | None = None,
    *,
    manager: ModelManager | None = None,
    network: bool = True,
    load: bool = True,
    timeout: float = 5.0,
) -> HealthReport:
    """Run the health checks and return the report (never raises for an
    unhealthy system). ``network=False`` skips the connectivity check;
    ``load=False`` skips model loading and embedding (a mirror has no use for
    them)."""
    from caxton_models.acquire.manager import ModelManager

    mgr = manager or ModelManager(config)
    cfg = mgr.config
    token = cfg.token or env_token()

    def scrub(text: str) -> str:
        return scrub_tokens(text, token)

    report = HealthReport()
    _Check(report, "cache_integrity", scrub).run(lambda: _cache_integrity(mgr))
    _Check(report, "cache_size", scrub).run(lambda: _cache_size(mgr))
    _Check(report, "disk_space", scrub).run(lambda: _disk_space(mgr.cache.root))
    _Check(report, "download_connectivity", scrub).run(
        lambda: _connectivity(mgr, network=network, timeout=timeout)
    )
    _Check(report, "degraded_mode", scrub).run(_degraded_loads)
    if not load:
        for name in ("model_loading", "embedding"):
            report.checks.append(CheckResult(name, "skipped", "not checked here"))
        return report
    loaded: dict[str, Any] = {}
    loading = _Check(report, "model_loading", scrub).run(lambda: _model_loading(mgr, loaded))
    if loading.status == "fail" or "embedder" not in loaded:
        report.checks.append(
            CheckResult("embedding", "skipped", "no model loaded; fix model_loading first")
        )
    else:
        _Check(report, "embedding", scrub).run(lambda: _embedding(loaded))
    emb = loaded.get("embedder")
    if emb is not None:
        emb.close()
    return report


# --------------------------------------------------------------------------- checks

_Outcome = tuple[Status, str, dict[str, Any]]


def _cache_integrity(mgr: ModelManager) -> _Outcome:
    installed = mgr.installed()
    if not installed:
        return "ok", f"no models installed in {mgr.cache.root}", {"models": {}}
    models: dict[str, str] = {}
    bad: list[str] = []
    for m in installed:
        # Quick mode, no metadata writes: a health probe must not change the cache.
        report = mgr.verify(m.name, full=False)
        models[m.name] = "ok" if report.ok else report.summary()
        if not report.ok:
            bad.append(m.name)
    if bad:
        fixes = "; ".join(f"caxton model verify {n} --repair" for n in bad)
        reasons = " | ".join(models[n] for n in bad)
        detail = f"{len(bad)} of {len(installed)} models are corrupt: {reasons}. Run: {fixes}"
        return "fail", detail, {"models": models}
    return "ok", f"{len(installed)} installed models pass quick validation", {"models": models}


def _cache_size(mgr: ModelManager) -> _Outcome:
    cc = mgr.config.cache
    installed = mgr.installed()
    size = sum(m.size_bytes for m in installed)
    data = {"bytes": size, "models": len(installed), "max_bytes": cc.max_size_bytes,
            "max_models": cc.max_models}  # fmt: skip
    over = []
    if cc.max_size_bytes is not None and size > cc.max_size_bytes:
        over.append(f"{_gb(size)} used, the limit is {_gb(cc.max_size_bytes)} (max_size_gb)")
    if cc.max_models is not None and len(installed) > cc.max_models:
        over.append(f"{len(installed)} models, the limit is {cc.max_models} (max_models)")
    if over:
        detail = "cache over its limits: " + "; ".join(over) + ". Run `caxton model gc`."
        return "warn", detail, data
    limit = f" of {_gb(cc.max_size_bytes)}" if cc.max_size_bytes is not None else ""
    return "ok", f"{_gb(size)}{limit} in {len(installed)} models", data


def _disk_space(root: Path) -> _Outcome:
    probe = root
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent  # the cache may not exist yet: its file system does
    usage = shutil.disk_usage(probe)
    data = {"free_bytes": usage.free, "total_bytes": usage.total, "path": str(probe)}
    if usage.free < LOW_DISK_BYTES:
        detail = (
            f"only {_gb(usage.free)} free on the file system of {root}: downloads may fail. "
            "Free space, remove models (`caxton model remove`), or move the cache "
            "(CAXTON_CACHE_DIR)."
        )
        return "warn", detail, data
    return "ok", f"{_gb(usage.free)} free on the file system of {root}", data


def _connectivity(mgr: ModelManager, *, network: bool, timeout: float) -> _Outcome:
    reason = mgr.network.offline_reason()
    if reason:
        return "skipped", f"skipped (offline): {reason}", {}
    if not network:
        return "skipped", "skipped (--skip-network)", {}
    from caxton_models._core import __version__, http_request
    from caxton_models.acquire.hub import redact_url

    cfg = mgr.config
    model_id = _default_model_id(mgr)
    results: dict[str, str] = {}
    reachable = 0
    for ep in cfg.endpoints:
        url = f"{ep.rstrip('/')}/api/models/{model_id}"
        try:
            # One attempt, no token: this asks "does it answer", nothing more.
            resp = http_request(
                "HEAD",
                url,
                headers={"User-Agent": f"caxton-models/{__version__}"},
                timeout=timeout,
                retries=0,
            )
        except Exception as e:
            results[redact_url(ep)] = f"unreachable ({type(e).__name__}: {e})"
            continue
        if resp.status >= 500:
            results[redact_url(ep)] = f"HTTP {resp.status}"
        else:
            reachable += 1
            results[redact_url(ep)] = f"HTTP {resp.status}"
    listing = "; ".join(f"{ep}: {r}" for ep, r in results.items())
    if reachable == len(results):
        return "ok", f"reachable: {listing}", {"endpoints": results}
    if reachable:
        return "warn", f"some endpoints do not answer: {listing}", {"endpoints": results}
    detail = (
        f"no download endpoint answers: {listing}. Check the network or proxy, the endpoints "
        "(HF_ENDPOINT, download.endpoints), or run offline (CAXTON_OFFLINE=1) with installed "
        "models."
    )
    return "fail", detail, {"endpoints": results}


def _default_model_id(mgr: ModelManager) -> str:
    name = mgr.config.embedding_model
    if name in mgr.registry:
        return mgr.registry.get(name).model_id
    return "sentence-transformers/all-MiniLM-L6-v2"


def _degraded_loads() -> _Outcome:
    from caxton_models import metrics

    table = metrics.registry().snapshot().counters.get(metrics.DEGRADED_LOADS, {})
    models = {dict(k).get("model_id", ""): int(v) for k, v in table.items() if v}
    if not models:
        return "ok", "no load in this process fell back to keyword-only vectors", {}
    listing = ", ".join(f"{m} ({n} loads)" for m, n in sorted(models.items()))
    detail = (
        f"this process is in degraded mode: {listing} got BM25 keyword vectors, not "
        "embeddings. Install a model (`caxton model install`) or allow downloads, then restart."
    )
    return "warn", detail, {"models": models}


def _model_loading(mgr: ModelManager, loaded: dict[str, Any]) -> _Outcome:
    from caxton_models.resolve import default_or_bundled
    from caxton_models.runtime.embedder import Embedder

    t0 = time.perf_counter()
    try:
        resolved, note = default_or_bundled(mgr)
        # Unoptimised: a probe must not write optimised graphs anywhere.
        emb = Embedder.from_dir(resolved.folder, optimize=False, **resolved.options)
    except Exception as e:
        if mgr.config.degraded is None:
            raise
        return _degraded_loading(mgr, loaded, f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    loaded.update(embedder=emb, spec=resolved.spec)
    data = {"model": resolved.name, "model_id": emb.model_id, "path": str(resolved.folder),
            "load_seconds": round(seconds, 4)}  # fmt: skip
    where = f"{resolved.name} loaded from {resolved.folder} in {seconds:.2f} s"
    return ("warn", f"{where}; {note}", data) if note else ("ok", where, data)


def _degraded_loading(mgr: ModelManager, loaded: dict[str, Any], reason: str) -> _Outcome:
    from caxton_models.keyword import DegradedEmbedder

    cfg = mgr.config
    emb = DegradedEmbedder(cfg.embedding_model, [reason], language=cfg.degraded_language)
    loaded.update(embedder=emb, spec=None)
    detail = (
        f"no embedding model loads ({reason}); degraded: keyword is set, so load() serves "
        f"BM25 keyword vectors ({emb.space}), not embeddings. Install a model "
        "(`caxton model install`) or reinstall caxton-models for bundled-mini."
    )
    return "warn", detail, {"model": cfg.embedding_model, "space": emb.space, "degraded": True}


def _embedding(loaded: dict[str, Any]) -> _Outcome:
    emb = loaded["embedder"]
    if emb.degraded:
        terms = emb.embed(["Hello world"])[0]
        data = {"model_id": emb.model_id, "terms": terms.nnz, "degraded": True}
        if terms.nnz == 0:
            return "fail", "the keyword embedder found no term in 'Hello world'", data
        return "ok", f'"Hello world" -> {terms.nnz} keyword terms ({emb.space}, degraded)', data
    spec = loaded["spec"]
    vectors = emb.embed(["Hello world"])
    values = [float(x) for x in vectors[0]]
    want = spec.dimensions if spec is not None else emb.dimensions
    norm = math.sqrt(sum(x * x for x in values))
    data = {"model_id": emb.model_id, "dimensions": len(values)}
    repair = "Run `caxton model verify --full --repair`."
    if vectors.shape[0] != 1 or len(values) != want:
        shape = tuple(vectors.shape)
        return (
            "fail",
            f"{emb.model_id} made a {shape} embedding, expected (1, {want}). {repair}",
            data,
        )
    if not all(math.isfinite(x) for x in values) or norm == 0:
        return "fail", f"{emb.model_id} made a zero or non-finite embedding. {repair}", data
    return "ok", f'"Hello world" -> {len(values)} finite dimensions ({emb.model_id})', data


def _gb(n: int | None) -> str:
    return "unlimited" if n is None else f"{n / 1e9:.2f} GB"


def lines(report: HealthReport) -> Iterator[str]:
    """The report for people: one line per check, then the overall status."""
    for c in report.checks:
        yield f"{c.status.upper():<8} {c.name:<22} {c.detail} ({c.duration_s:.2f} s)"
    yield f"health: {report.status}"
