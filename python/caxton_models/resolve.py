"""From a name or a folder to what the runtime loads: the one resolver used by
``load()``, the fallback chain, the health checks and the CLI.

A name is the bundled model, a registry name (installed, validated,
downloaded if needed and allowed, through :class:`ModelManager`), or a folder
in the Hub's layout (used as it is). The result names the folder, the
registry entry (if any) and the Embedder options the entry implies.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models._bundled import bundled_dir
from caxton_models.errors import InvalidModelFormat, ModelNotFound
from caxton_models.registry import BUILTIN_MODELS, ModelSpec
from caxton_models.store import CHECKSUM_FILE, METADATA_FILE, is_hex, read_json_nofollow

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager

__all__ = [
    "BUNDLED_MODEL",
    "Resolved",
    "check_folder_task",
    "check_task",
    "default_or_bundled",
    "installed_revision",
    "resolve",
    "spec_options",
]

#: The model shipped inside the package (same embedding space as all-MiniLM-L6-v2).
BUNDLED_MODEL = "bundled-mini"


@dataclass(frozen=True)
class Resolved:
    """A model ready to load: its folder, its registry entry, and the Embedder
    options that entry implies."""

    name: str
    folder: Path
    spec: ModelSpec | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: The commit the store installed in ``folder`` (None: not recorded, or
    #: not a cache entry), and a digest of its manifest: together they name
    #: the exact files, which an update or rollback swaps under the same path.
    commit: str | None = None
    content: str | None = None
    #: The weights file to run from instead of the folder's preferred one
    #: (``model.safetensors`` when ONNX Runtime refused the shipped graph).
    weights: str | None = None

    def with_revision(self) -> Resolved:
        """This model with the revision now installed in its folder."""
        commit, content = installed_revision(self.folder)
        return replace(self, commit=commit, content=content)


def installed_revision(folder: Path) -> tuple[str | None, str | None]:
    """(commit, manifest digest) of the cache entry at ``folder``; (None, None)
    for a folder that is not one. The digest tells apart two installs with no
    commit (local folders, archives). Read on every load(), so only the two
    small records are read, not validated: validation is the cache check's."""
    try:
        meta = read_json_nofollow(folder / METADATA_FILE, limit=1 << 20)
        manifest = read_json_nofollow(folder / CHECKSUM_FILE)
    except (OSError, ValueError):
        return None, None
    commit = meta.get("commit") if isinstance(meta, dict) else None
    listing = json.dumps(manifest, sort_keys=True).encode()
    return (commit if is_hex(commit, 40) else None), hashlib.sha256(listing).hexdigest()[:16]


def spec_options(spec: ModelSpec | None) -> dict[str, Any]:
    """What the Embedder needs from a registry entry."""
    if spec is None:
        return {}
    kw: dict[str, Any] = {"model_id": spec.model_id, "space": spec.space}
    if spec.all_prompts:
        kw["prompts"] = spec.all_prompts
    return kw


def _bundled(manager: ModelManager | None) -> Resolved:
    if manager is not None and BUNDLED_MODEL in manager.registry:
        spec: ModelSpec | None = manager.registry.get(BUNDLED_MODEL)
    else:
        spec = next(s for s in BUILTIN_MODELS if s.name == BUNDLED_MODEL)
    return Resolved(BUNDLED_MODEL, bundled_dir(BUNDLED_MODEL), spec, spec_options(spec))


def is_registry_name(name: str, manager: ModelManager | None = None) -> bool:
    if manager is not None:
        return name in manager.registry
    return any(s.name == name for s in BUILTIN_MODELS)


def resolve(name_or_path: str | os.PathLike[str], manager: ModelManager | None = None) -> Resolved:
    """The bundled model, a folder, or a registry name (through ``manager``,
    which may download). ``manager`` is needed only for a registry name."""
    name = os.fspath(name_or_path)
    if name == BUNDLED_MODEL:
        return _bundled(manager)
    if is_registry_name(name, manager):
        if manager is None:
            from caxton_models.acquire.manager import default_manager

            manager = default_manager()
        if manager.registry.get(name).bundled:
            return _bundled(manager)
        folder, spec = manager.ensure(name)
        return Resolved(spec.name, folder, spec, spec_options(spec))
    path = Path(name).expanduser()
    if path.is_dir():
        return Resolved(str(path.absolute()), path.absolute())
    if manager is not None:
        spec = manager.spec(name)  # a Hub repo id, or ModelNotFound with the closest names
        folder, spec = manager.ensure(spec.name)
        return Resolved(spec.name, folder, spec, spec_options(spec))
    raise ModelNotFound(
        f"model {name!r} is neither a registry name, a Hub repo id (org/name) nor a folder: "
        "see `caxton model list`",
        model=name,
    )


def default_or_bundled(manager: ModelManager, name: str | None = None) -> tuple[Resolved, str]:
    """The configured default model (or ``name``) when it is installed or
    bundled, with no download; else the bundled model and a note that says so
    and what to do."""
    wanted = name or manager.config.embedding_model
    spec = manager.registry.get(wanted) if wanted in manager.registry else None
    if spec is not None and spec.bundled:
        return _bundled(manager), ""
    if spec is not None and manager.cache.get(spec.name) is not None:
        folder = manager.cache.model_dir(spec.name)
        return Resolved(spec.name, folder, spec, spec_options(spec)), ""
    note = (
        f"{wanted} is not in the cache ({manager.cache.root}); using the bundled model "
        f"{BUNDLED_MODEL} (same embedding space, int8). `caxton model download {wanted}` "
        "gets the full model."
    )
    return _bundled(manager), note


#: task -> what it is called and the function that loads it.
TASK_NAMES = {
    "embedding": ("an embedding model", "caxton_models.load"),
    "rerank": ("a reranker", "caxton_models.load_reranker"),
    "sparse": ("a sparse encoder", "caxton_models.load_sparse"),
}


def check_task(spec: ModelSpec | None, task: str) -> None:
    """A registry model of another task is refused, naming its loader."""
    if spec is not None and spec.task != task:
        (is_, loader), (not_, _) = TASK_NAMES[spec.task], TASK_NAMES[task]
        raise InvalidModelFormat(
            f"{spec.name} ({spec.model_id}) is {is_}, not {not_}: load it with {loader}()"
        )


def check_folder_task(folder: Path, task: str) -> None:
    """A folder outside the registry is judged by its own files, by the rule
    that describes any Hub repo (acquire/_adhoc.task_of)."""
    from caxton_models.acquire._adhoc import task_of
    from caxton_models.runtime.graph.pipeline import read_json

    config = read_json(folder / "config.json")
    found = task_of(folder, config) if isinstance(config, dict) else task
    if found != task:
        (is_, loader), (not_, _) = TASK_NAMES[found], TASK_NAMES[task]
        raise InvalidModelFormat(f"{folder} is {is_}, not {not_}: load it with {loader}()")
