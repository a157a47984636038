"""Reading a model folder as the store records it: strict parsers, no
writes, usable on a folder outside any cache too."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from caxton_models._paths import check_name
from caxton_models.errors import InvalidPath
from caxton_models.store._fs import read_json_nofollow
from caxton_models.store._graphs import GraphCache
from caxton_models.store._records import (
    CHECKSUM_FILE,
    METADATA_FILE,
    FileEntry,
    InstalledModel,
    Metadata,
    NewerSchema,
    is_hex,
    parse_manifest,
)


def read_model(path: Path, name: str, derived_bytes: int = 0) -> InstalledModel | None:
    """The model folder at ``path`` as found on disk: its metadata and manifest
    parsed strictly (what is wrong with them is kept in ``problem``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None  # a symlink or a stray file is never a model
    meta: Metadata | None = None
    manifest: dict[str, FileEntry] | None = None
    problems: list[str] = []
    read_only = False
    try:
        meta = Metadata.from_json(read_json_nofollow(path / METADATA_FILE))
        if meta.name != name:
            problems.append(f"metadata names {meta.name!r}")
            meta = replace(meta, name=name, validation_status="unverified")
    except NewerSchema as e:
        problems.append(str(e))
        read_only = True
    except FileNotFoundError:
        problems.append("no .caxton_metadata")
    except (OSError, ValueError, TypeError, InvalidPath) as e:
        problems.append(f"bad .caxton_metadata: {e}")
    try:
        manifest = parse_manifest(read_json_nofollow(path / CHECKSUM_FILE))
    except FileNotFoundError:
        problems.append("no .caxton_checksum")
    except (OSError, ValueError, TypeError, InvalidPath) as e:
        problems.append(f"bad .caxton_checksum: {e}")
    if meta is not None and problems and meta.validation_status == "verified":
        meta = replace(meta, validation_status="unverified")
    return InstalledModel(
        name,
        path,
        meta,
        manifest,
        "; ".join(problems) or None,
        read_only,
        derived_bytes,
    )


def read_installed(model_dir: str | os.PathLike[str]) -> InstalledModel | None:
    """The cache entry at ``model_dir`` as the store reads it (strictly parsed
    metadata and manifest), without crash recovery or access counting; None
    when the folder is not a cache entry."""
    path = Path(model_dir).absolute()
    try:
        check_name(path.name)
    except InvalidPath:
        return None
    m = read_model(path, path.name, GraphCache(path.parent).bytes_for(path.name))
    return m if m is not None and (m.metadata is not None or m.manifest is not None) else None


def folder_revision(folder: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """The (commit, revision) a folder's ``.caxton_metadata`` names: a cache
    entry's record, or just those two keys in a plain folder of repos (an
    operator's way to give it its real commit). (None, None) when absent or
    malformed."""
    installed = read_installed(folder)
    if installed is not None and installed.metadata is not None:
        return installed.metadata.commit, installed.metadata.revision
    try:
        data = read_json_nofollow(Path(folder) / METADATA_FILE, limit=1 << 20)
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    commit, revision = data.get("commit"), data.get("revision")
    return (
        commit if is_hex(commit, 40) else None,
        revision if isinstance(revision, str) and revision else None,
    )
