"""The download plan: which of a repository's files to fetch, in what order,
and the SHA-256 each must have. Pure: no I/O, so it can refuse a whole
snapshot (an unsafe name, a malformed listing) before anything is written.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from caxton_models._paths import check_unique
from caxton_models.errors import ChecksumMismatch, InvalidModelFormat, ModelNotFound
from caxton_models.registry import ModelSpec, is_pickle
from caxton_models.store import InstalledModel, is_hex


def external_data(weights: str, listing: Iterable[str], locations: Iterable[str] = ()) -> list[str]:
    """The files an ONNX graph keeps its tensors in: the ``location`` of each
    external tensor (read from the graph, when it is at hand), and the names
    exporters give them beside the graph (``model.onnx_data``,
    ``model.onnx.data``, ``model.onnx_data_1``...), which covers a graph too
    large to read before it is fetched."""
    if not weights.endswith(".onnx"):
        return []
    folder = posixpath.dirname(weights)
    named = {posixpath.normpath(posixpath.join(folder, loc)) for loc in locations if loc}
    return sorted(
        p for p in listing
        if p in named or (p != weights and p.startswith((weights + "_data", weights + ".data")))
    )  # fmt: skip


def plan_files(spec: ModelSpec, info: Any, *, allow_pickle: bool) -> list[Any]:
    """The listed files ``spec`` needs, small ones (config, tokenizer) first and
    the weights last."""
    listing = {f.path: f for f in info.files}
    check_unique(list(listing), what=f"file name in {spec.model_id}@{info.commit}")
    weights = spec.choose_weights(listing)
    missing = [p for p in spec.required_files if p not in listing]
    if weights is None:
        missing.append(" or ".join(spec.weights))
    if missing:
        alt = [p for p in listing if p.endswith((".onnx", ".safetensors"))]
        hint = f" The repository has: {', '.join(alt[:5])}." if alt else ""
        raise ModelNotFound(
            f"{spec.model_id}@{info.commit} has no {', '.join(missing)} (needed for "
            f"model_type {spec.model_type.value}).{hint} Pick another model_type or file "
            "list in caxton.yaml.",
            model=spec.name,
            files=missing,
        )
    assert weights is not None
    wanted = [
        *spec.required_files,
        weights,
        *external_data(weights, listing),
        *(p for p in spec.optional_files if p in listing),
    ]
    files = [listing[p] for p in dict.fromkeys(wanted)]
    if any(is_pickle(f.path) for f in files):
        spec.check_safe(allow_pickle)
    for f in files:
        if not (isinstance(f.size, int) and f.size >= 0):
            raise InvalidModelFormat(f"listing gives {f.path} a bad size {f.size!r}")
        if f.sha256 is not None and not is_hex(f.sha256, 64):
            raise InvalidModelFormat(f"listing gives {f.path} a malformed sha256")
    files.sort(key=lambda f: (f.path == weights or f.lfs, f.size, f.path))
    return files


def expected_digests(
    spec: ModelSpec, files: Sequence[Any], installed: InstalledModel | None, commit: str
) -> dict[str, str | None]:
    """The SHA-256 each file must have: the registry's pin, else the listing's
    LFS hash, else what was recorded at the first download of this commit."""
    recorded: Mapping[str, Any] = {}
    if installed and installed.manifest and installed.metadata:
        recorded = installed.manifest if installed.metadata.commit == commit else {}
    out: dict[str, str | None] = {}
    for f in files:
        pin = spec.checksums.get(f.path)
        if pin and f.sha256 and pin != f.sha256:
            raise ChecksumMismatch(
                f"{spec.model_id}@{commit}: the repository lists {f.path} with sha256 "
                f"{f.sha256}, but the registry pins {pin}. The repository changed or the "
                "mirror serves something else; nothing was downloaded.",
                expected=pin,
                actual=f.sha256,
                path=f.path,
            )
        entry = recorded.get(f.path)
        out[f.path] = pin or f.sha256 or (entry.sha256 if entry is not None else None)
    return out
