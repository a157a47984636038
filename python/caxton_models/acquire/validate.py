"""The spec's six validation steps for an installed model.

1. existence  - every manifest and required file is a regular file (no links)
2. size       - sizes match the manifest
3. checksum   - SHA-256 of every file (``hash_files``, parallel) matches
                the manifest and any checksum the registry pins
4. format     - JSON parses; safetensors header is sane; ONNX is a protobuf
5. compatibility - no pickle weights, dimensions agree with the spec,
                onnxruntime new enough
6. functional - embed "Hello world": right dimension, finite, non-zero

``quick`` mode runs 1, 2 and the cheap half of 5 (sizes and manifest: what a
load does every time). ``full`` mode runs all six; it is what
``validation_interval`` and a failed load trigger.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models._core import hash_files, onnx_external_data, safetensors_header
from caxton_models._paths import check_repo_path, display, safe_join
from caxton_models.errors import InvalidModelFormat, InvalidPath, ValidationFailed

if TYPE_CHECKING:
    from caxton_models.registry import ModelSpec
    from caxton_models.store import FileEntry, InstalledModel

__all__ = [
    "FileIntegrity",
    "StepResult",
    "ValidationReport",
    "ValidationStatus",
    "check_file_formats",
    "validate_model",
]

_MAX_JSON = 64 << 20


class ValidationStatus(str, Enum):
    VALID = "valid"
    INVALID = "invalid"  # checksum or size mismatch
    MISSING = "missing"
    CORRUPTED = "corrupted"  # exists but unreadable / wrong type / bad format
    UNKNOWN = "unknown"  # not checked (quick mode)


@dataclass
class FileIntegrity:
    filename: str
    expected_sha256: str | None
    actual_sha256: str | None
    size_bytes: int
    expected_size: int | None
    status: ValidationStatus = ValidationStatus.UNKNOWN
    detail: str = ""


@dataclass
class StepResult:
    name: str
    ok: bool | None  # None: skipped
    detail: str = ""


@dataclass
class ValidationReport:
    model: str
    path: Path
    mode: str
    steps: list[StepResult] = field(default_factory=list)
    files: dict[str, FileIntegrity] = field(default_factory=dict)
    embedding_dimensions: int | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok is not False for s in self.steps)

    @property
    def bad_files(self) -> list[str]:
        """Files to fetch again: missing, mismatched or unreadable."""
        bad = (ValidationStatus.INVALID, ValidationStatus.MISSING, ValidationStatus.CORRUPTED)
        return sorted(p for p, f in self.files.items() if f.status in bad)

    @property
    def failed_steps(self) -> list[StepResult]:
        return [s for s in self.steps if s.ok is False]

    def summary(self) -> str:
        if self.ok:
            return f"{self.model}: {self.mode} validation passed"
        parts = [f"{s.name}: {s.detail}" for s in self.failed_steps]
        return f"{self.model} at {self.path} failed {self.mode} validation: " + "; ".join(parts)

    def raise_for_status(self) -> None:
        if not self.ok:
            raise ValidationFailed(
                self.summary() + ". Run 'caxton model verify --repair' or download it again.",
                model=self.model,
                files=self.bad_files,
                report=self,
            )


# --------------------------------------------------------------------------- formats


def _check_json(path: Path) -> None:
    size = os.path.getsize(path)
    if size > _MAX_JSON:
        raise ValueError(f"{size} bytes is too large for a JSON config")
    with open(path, "rb") as f:
        json.loads(f.read().decode("utf-8"))


def _check_safetensors(path: Path) -> None:
    # The whole header, by the reference crate plus what it misses (the core).
    try:
        safetensors_header(path)
    except InvalidModelFormat as e:
        raise ValueError(str(e)) from None


def _check_onnx(path: Path, root: Path, rel: str) -> None:
    # The protobuf walk is the core's (rust/src/onnx.rs): it refuses a file
    # that is not a ModelProto or not well-formed as far as it reads, and
    # lists each external data file with the furthest byte a tensor reads.
    try:
        files = onnx_external_data(path)
    except InvalidModelFormat as e:
        raise ValueError(str(e)) from None
    for location, end, tensor in files:
        _check_external(root, rel, location, end, tensor)


def _check_external(root: Path, rel: str, location: str, end: int, tensor: str) -> None:
    """External data must be a regular file inside the model folder (not a
    link, not a FIFO, no ``..``, not absolute) and long enough."""
    try:
        check_repo_path(location, what="ONNX external data location")
        target = safe_join(root, posixpath.join(posixpath.dirname(rel), location))
        st = os.lstat(target)
    except (InvalidPath, OSError) as e:
        raise ValueError(f"external data {display(location)} is refused: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"external data {display(location)} is not a regular file")
    if end > st.st_size:
        raise ValueError(
            f"external data {display(location)} is {st.st_size} bytes; "
            f"tensor {display(tensor)} reads to {end}"
        )


def check_file_formats(root: Path, paths: Iterable[str], *, model: str = "") -> None:
    """Raise :class:`InvalidModelFormat` naming the first file that is not what
    its name says."""
    for rel in paths:
        p = root / rel
        try:
            if rel.endswith(".json"):
                _check_json(p)
            elif rel.endswith(".safetensors"):
                _check_safetensors(p)
            elif rel.endswith(".onnx"):
                _check_onnx(p, root, rel)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise InvalidModelFormat(
                f"{rel} of model {model!r} in {root} is not a valid "
                f"{rel.rsplit('.', 1)[-1]} file: {e}",
                model=model,
                path=rel,
            ) from None


# --------------------------------------------------------------------------- the pipeline

Functional = Callable[[Path, "ModelSpec"], Sequence[float]]


def _default_functional(path: Path, spec: ModelSpec) -> Sequence[float] | None:
    try:
        from caxton_models.runtime.embedder import Embedder
    except ImportError:
        return None
    if spec.task == "rerank":  # one score per label
        from caxton_models.runtime.reranker import Reranker

        ranker = Reranker.from_dir(path, model_id=spec.model_id, activation="identity")
        return [float(x) for x in ranker.logits([("Hello world", "Hello world")])[0]]
    if spec.task == "sparse":  # one weight per vocabulary entry
        from caxton_models.runtime.splade import SpladeEncoder

        sparse = SpladeEncoder.from_dir(path, model_id=spec.model_id)
        return list(sparse.embed(["Hello world"])[0].to_dense(sparse.dimensions))
    emb: Any = Embedder.from_dir(path, model_id=spec.model_id)
    return list(emb.embed(["Hello world"])[0])


def validate_model(
    installed: InstalledModel,
    spec: ModelSpec | None = None,
    *,
    mode: str = "quick",
    functional: Functional | bool | None = None,
) -> ValidationReport:
    """Run the validation steps and return a report (never raises for a bad
    model; call :meth:`ValidationReport.raise_for_status`). ``functional``:
    a callable ``(dir, spec) -> vector``, True for the default (the package's
    Embedder), False/None to skip step 6."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode {mode!r}; choose one of: quick, full")
    report = ValidationReport(installed.name, installed.path, mode)
    if installed.manifest is None:
        problem = installed.problem or "no valid .caxton_checksum"
        report.steps.append(StepResult("existence", False, problem))
        return _counted(report, installed, spec, manifest_lost=True)
    full = mode == "full"
    present = _existence(report, installed.manifest, spec)
    wrong = _sizes(report, present)
    if full:
        _checksums(report, installed.manifest, [r for r in present if r not in wrong])
        _formats(report, present)
    else:
        report.steps.append(StepResult("checksum", None, "quick mode: sizes only"))
        report.steps.append(StepResult("format", None, "quick mode"))
    problems = _compatibility(installed.path, spec, present, full=full)
    report.steps.append(StepResult("compatibility", not problems, "; ".join(problems)))
    if full and functional and spec is not None and report.ok:
        fn = _default_functional if functional is True else functional
        report.steps.append(_functional(report, spec, fn))  # type: ignore[arg-type]
    else:
        report.steps.append(StepResult("functional", None, "skipped"))
    return _counted(report, installed, spec)


def _existence(
    report: ValidationReport, manifest: Mapping[str, FileEntry], spec: ModelSpec | None
) -> list[str]:
    """Step 1: every manifest and required file is a regular file. Returns those present."""
    required = list(spec.required_files) if spec else []
    missing: list[str] = []
    present: list[str] = []
    for rel in dict.fromkeys([*manifest, *required]):
        entry = manifest.get(rel)
        pin = spec.checksums.get(rel) if spec else None
        fi = FileIntegrity(rel, pin or (entry.sha256 if entry else None), None, 0,
                           entry.size if entry else None)  # fmt: skip
        report.files[rel] = fi
        try:
            st = os.lstat(report.path / rel)
        except (FileNotFoundError, NotADirectoryError):
            fi.status = ValidationStatus.MISSING
            missing.append(rel)
            continue
        if not stat.S_ISREG(st.st_mode):
            fi.status = ValidationStatus.CORRUPTED
            fi.detail = "not a regular file (symlinks are never followed)"
            missing.append(rel)
            continue
        fi.size_bytes = st.st_size
        present.append(rel)
    detail = f"missing or not regular: {', '.join(missing)}" if missing else ""
    report.steps.append(StepResult("existence", not missing, detail))
    return present


def _sizes(report: ValidationReport, present: list[str]) -> list[str]:
    """Step 2: sizes against the manifest. Returns the files of the wrong size."""
    wrong = []
    for rel in present:
        fi = report.files[rel]
        if fi.expected_size is not None and fi.size_bytes != fi.expected_size:
            fi.status = ValidationStatus.INVALID
            fi.detail = f"{fi.size_bytes} bytes, expected {fi.expected_size}"
            wrong.append(rel)
    detail = "; ".join(f"{r}: {report.files[r].detail}" for r in wrong)
    report.steps.append(StepResult("size", not wrong, detail))
    return wrong


def _checksums(
    report: ValidationReport, manifest: Mapping[str, FileEntry], rels: list[str]
) -> None:
    """Step 3 (full): the SHA-256 of every file, hashed in parallel by the core."""
    try:
        digests = hash_files([report.path / r for r in rels], "sha256") if rels else []
    except OSError as e:
        report.steps.append(StepResult("checksum", False, f"cannot read files: {e}"))
        return
    bad = []
    for rel, digest in zip(rels, digests, strict=True):
        fi = report.files[rel]
        fi.actual_sha256 = digest
        want = {fi.expected_sha256, manifest[rel].sha256 if rel in manifest else None} - {None}
        if any(w != digest for w in want):
            fi.status = ValidationStatus.INVALID
            fi.detail = f"sha256 {digest}, expected {fi.expected_sha256}"
            bad.append(rel)
        else:
            fi.status = ValidationStatus.VALID
    detail = "; ".join(f"{r}: {report.files[r].detail}" for r in bad)
    report.steps.append(StepResult("checksum", not bad, detail))


def _formats(report: ValidationReport, present: list[str]) -> None:
    """Step 4 (full): each file is what its name says."""
    bad = []
    for rel in present:
        if report.files[rel].status is ValidationStatus.INVALID:
            continue
        try:
            check_file_formats(report.path, [rel], model=report.model)
        except InvalidModelFormat as e:
            report.files[rel].status = ValidationStatus.CORRUPTED
            report.files[rel].detail = str(e)
            bad.append(rel)
    report.steps.append(StepResult("format", not bad, "; ".join(bad)))


def _functional(report: ValidationReport, spec: ModelSpec, fn: Functional) -> StepResult:
    """Step 6 (full): the model loads and embeds "Hello world" into a finite,
    non-zero vector of the registry's dimensions."""
    try:
        vec = fn(report.path, spec)
    except Exception as e:  # any load failure is a validation failure
        return StepResult("functional", False, f"{type(e).__name__}: {e}")
    if vec is None:
        return StepResult("functional", None, "no inference engine available")
    values = [float(x) for x in vec]
    report.embedding_dimensions = len(values)
    if len(values) != spec.dimensions:
        detail = f"embedding has {len(values)} dimensions, spec says {spec.dimensions}"
        return StepResult("functional", False, detail)
    if not all(math.isfinite(x) for x in values) or math.sqrt(sum(x * x for x in values)) == 0:
        return StepResult("functional", False, "embedding is zero or not finite")
    return StepResult("functional", True, "")


# The failure_type label of caxton_model_validation_failures_total, per step.
_FAILURE_TYPES = {
    "existence": "missing",
    "size": "size",
    "checksum": "checksum",
    "format": "format",
    "compatibility": "compatibility",
    "functional": "functional",
}


def _counted(
    report: ValidationReport,
    installed: InstalledModel,
    spec: ModelSpec | None,
    *,
    manifest_lost: bool = False,
) -> ValidationReport:
    """Every validation, whoever asked for it, counts its failed steps here
    (one sample per step, so a model with three missing files counts once)."""
    if report.ok:
        return report
    from caxton_models import metrics

    meta = installed.metadata
    model_id = spec.model_id if spec else (meta.model_id if meta else installed.name)
    for step in report.failed_steps:
        kind = "manifest" if manifest_lost else _FAILURE_TYPES.get(step.name, step.name)
        metrics.count_validation_failure(model_id, kind)
    return report


def _compatibility(
    root: Path, spec: ModelSpec | None, present: list[str], *, full: bool
) -> list[str]:
    from caxton_models.registry import is_pickle

    problems: list[str] = []
    if spec is None:
        return problems
    if not spec.allow_pickle:
        pick = [p for p in present if is_pickle(p)]
        if pick:
            problems.append(f"pickle weights present: {', '.join(pick)}")
    if not full:
        return problems
    pooling = root / "1_Pooling" / "config.json"
    has_dense = any(p.startswith("2_Dense/") for p in present)
    if "1_Pooling/config.json" in present and not has_dense:
        try:
            dim = json.loads(pooling.read_text("utf-8")).get("word_embedding_dimension")
            if isinstance(dim, int) and dim != spec.dimensions:
                problems.append(
                    f"1_Pooling says {dim} dimensions, the registry says {spec.dimensions}"
                )
        except (OSError, ValueError, AttributeError):
            problems.append("1_Pooling/config.json is unreadable")
    if spec.choose_weights(present) is None:
        problems.append(f"no weights to run: needs one of {', '.join(spec.weights)}")
    if any(w.endswith((".onnx", ".safetensors")) for w in spec.weights):
        try:
            import onnxruntime

            if _version_tuple(onnxruntime.__version__) < _version_tuple(
                spec.compatibility.min_onnxruntime
            ):
                problems.append(
                    f"onnxruntime {onnxruntime.__version__} is older than "
                    f"{spec.compatibility.min_onnxruntime}"
                )
        except ImportError:
            problems.append("onnxruntime is not installed")
    return problems


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isascii() and ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)
