"""Install a model from a folder on this machine (offline install, archive
import): the policy lives here (pickle refusal, expected digests, required
files, formats); the store only stages and publishes.

Files are copied into a staging folder, hashed once (``hash_files``),
checked against the registry's pins and against the ``.caxton_checksum`` an
export carries, then published atomically.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from caxton_models._core import hash_files
from caxton_models._paths import RESERVED_PREFIX, check_name, check_unique, display, safe_join
from caxton_models.acquire._upkeep import cache_limits
from caxton_models.acquire.validate import check_file_formats
from caxton_models.config import Config
from caxton_models.errors import (
    ChecksumMismatch,
    InvalidPath,
    SizeMismatch,
    UnsafeModel,
    ValidationFailed,
)
from caxton_models.registry import ModelSpec, is_pickle
from caxton_models.store import (
    CHECKSUM_FILE,
    DIR_MODE,
    METADATA_FILE,
    CacheLimits,
    FileEntry,
    InstalledModel,
    Metadata,
    ModelCache,
    copy_nofollow,
    parse_manifest,
    read_json_nofollow,
    rmtree,
    walk_files,
)

#: A direct install into a bare cache: no size or count limit, nothing pinned
#: beyond what the cache's own records pin.
NO_LIMITS = CacheLimits()


def _listing(
    src: Path, exclude: Iterable[str]
) -> tuple[dict[str, int], dict[str, FileEntry], Metadata | None]:
    """The regular files of ``src`` with their sizes, and the manifest and
    metadata an export carries. Symlinks, devices and reserved or unsafe names
    are refused before anything is copied."""
    listing: dict[str, int] = {}
    carried: dict[str, FileEntry] = {}
    carried_meta: Metadata | None = None
    skip = set(exclude)
    for rel, st in walk_files(src):
        top = rel.split("/", 1)[0]
        if rel in skip or top in (".git", ".cache"):
            continue
        if rel == CHECKSUM_FILE:
            with contextlib.suppress(OSError, ValueError, TypeError, InvalidPath):
                carried = parse_manifest(read_json_nofollow(src / rel))
            continue
        if rel == METADATA_FILE:
            with contextlib.suppress(OSError, ValueError, TypeError, InvalidPath):
                carried_meta = Metadata.from_json(read_json_nofollow(src / rel))
            continue
        if stat.S_ISLNK(st.st_mode):
            raise InvalidPath(
                f"{display(rel)} in {src} is a symlink; install copies only regular files "
                "inside the folder (copy the target in instead)",
                path=rel,
            )
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPath(f"{display(rel)} in {src} is not a regular file", path=rel)
        if rel.split("/")[-1].startswith(RESERVED_PREFIX):
            raise InvalidPath(f"{display(rel)} uses a name reserved for caxton", path=rel)
        listing[rel] = st.st_size
    check_unique(listing, what="file name")
    return listing, carried, carried_meta


def _check_policy(
    name: str,
    src: Path,
    listing: Mapping[str, int],
    required: Iterable[str],
    weights: Sequence[str],
    allow_pickle: bool,
) -> None:
    missing = [f for f in required if f not in listing]
    if weights and not any(w in listing for w in weights):
        missing.append(" or ".join(weights))
    if missing:
        raise ValidationFailed(
            f"{src} lacks files model {name!r} needs: {', '.join(missing)}",
            model=name,
            files=missing,
        )
    pickles = [p for p in listing if is_pickle(p)]
    if pickles and not allow_pickle:
        raise UnsafeModel(
            f"{src} contains pickle weights ({', '.join(pickles)}), which can run code when "
            "loaded; remove them (keep safetensors/ONNX) or pass allow_pickle=True",
            model=name,
            files=pickles,
        )


def _copy_and_check(
    name: str,
    src: Path,
    staging: Path,
    listing: Mapping[str, int],
    expected: Mapping[str, str],
    carried: Mapping[str, FileEntry],
) -> dict[str, FileEntry]:
    """Copy into ``staging``, hash the copies once, and check each digest
    against the registry's pin or the export's manifest."""
    paths = sorted(listing)
    for rel in paths:
        dst = safe_join(staging, rel)
        dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        copy_nofollow(src / rel, dst)
    digests = hash_files([staging / p for p in paths], "sha256")
    files: dict[str, FileEntry] = {}
    for rel, digest in zip(paths, digests, strict=True):
        size = os.lstat(staging / rel).st_size
        prev = carried.get(rel)
        want = expected.get(rel) or (prev.sha256 if prev else None)
        if want is not None and want != digest:
            raise ChecksumMismatch(
                f"{rel} of model {name!r} from {src}: sha256 {digest}, expected {want}. "
                "The folder is corrupt or a different version; nothing was installed.",
                expected=want,
                actual=digest,
                path=rel,
            )
        if prev is not None and prev.size != size:
            raise SizeMismatch(
                f"{rel}: {size} bytes, the folder's manifest says {prev.size}",
                expected=prev.size,
                actual=size,
                path=rel,
            )
        files[rel] = FileEntry(
            size, digest, prev.git_oid if prev else None, bool(prev and prev.lfs)
        )
    return files


def install_from_dir(
    cache: ModelCache,
    name: str,
    src_dir: str | os.PathLike[str],
    *,
    model_id: str | None = None,
    revision: str = "local",
    commit: str | None = None,
    expected: Mapping[str, str] | None = None,
    required_files: Iterable[str] = (),
    weights: Sequence[str] = (),
    source: str = "local",
    allow_pickle: bool = False,
    limits: CacheLimits = NO_LIMITS,
    check_formats: bool = True,
    exclude: Iterable[str] = (),
) -> InstalledModel:
    """Install the regular files of ``src_dir`` as model ``name`` into ``cache``
    (``exclude``: paths not to install, such as an export's manifest;
    ``limits``: what room is made under, by default none; :func:`install_spec`
    passes the configuration's)."""
    check_name(name)
    src = Path(src_dir)
    if not src.is_dir():
        raise InvalidPath(f"{src} is not a directory", path=str(src))
    listing, carried, meta_src = _listing(src, exclude)
    _check_policy(name, src, listing, required_files, weights, allow_pickle)
    total = sum(listing.values())
    if limits.bounded:
        cache.make_room(limits, incoming_bytes=total, incoming_name=name)
    cache.ensure_disk_space(total, limits, incoming_name=name)
    staging = cache.new_staging(name)
    try:
        files = _copy_and_check(name, src, staging, listing, expected or {}, carried)
        if check_formats:
            check_file_formats(staging, sorted(files), model=name)
        previous = cache.get(name)
        cache.finalize(
            staging,
            name=name,
            files=files,
            model_id=model_id or (meta_src.model_id if meta_src else f"local/{name}"),
            revision=revision if revision != "local" or meta_src is None else meta_src.revision,
            commit=commit or (meta_src.commit if meta_src else None),
            source=source,
            previous=previous.metadata if previous else None,
        )
        return cache.publish(name, staging)
    except BaseException:
        rmtree(staging)
        raise


def install_spec(
    cache: ModelCache,
    config: Config,
    name: str,
    spec: ModelSpec,
    src_dir: str | os.PathLike[str],
    **kw: Any,
) -> InstalledModel:
    """:func:`install_from_dir` with what the registry and the config say of
    ``spec`` (checksums, required files, pickle and eviction policy, pins);
    ``kw`` overrides any of it."""
    kw.setdefault("model_id", spec.model_id)
    kw.setdefault("revision", spec.revision)
    kw.setdefault("commit", spec.revision if spec.pinned else None)
    kw.setdefault("expected", dict(spec.checksums))
    kw.setdefault("required_files", spec.required_files)
    kw.setdefault("weights", spec.weights)
    kw.setdefault("allow_pickle", config.download.allow_pickle or spec.allow_pickle)
    # The config's pins travel in the limits and are never written into the
    # model's metadata: a copy there would outlive the config's list.
    kw.setdefault("limits", cache_limits(config))
    return install_from_dir(cache, name, src_dir, **kw)
