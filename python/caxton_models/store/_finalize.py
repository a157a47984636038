"""Finishing a staged model folder: the folder checked against its file list,
modes fixed, then the manifest and, last, the metadata written (so a folder
with metadata is always whole)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from caxton_models.errors import InvalidPath, SizeMismatch, ValidationFailed
from caxton_models.store._fs import DIR_MODE, FILE_MODE, rmtree, walk_files, write_json_atomic
from caxton_models.store._records import (
    CHECKSUM_FILE,
    METADATA_FILE,
    FileEntry,
    Metadata,
    format_time,
    manifest_json,
    now_utc,
)


def finalize(
    staging: Path,
    *,
    name: str,
    files: Mapping[str, FileEntry],
    model_id: str,
    revision: str,
    commit: str | None,
    source: str,
    pinned: bool = False,
    previous: Metadata | None = None,
) -> Metadata:
    """Check that ``staging`` holds exactly ``files`` (regular files, right
    sizes), remove anything else (resume state), fix modes, then write the
    manifest and, last, the metadata."""
    expected = set(files)
    for rel, st in list(walk_files(staging)):
        if rel not in expected:
            rmtree(staging / rel)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPath(f"{rel} in {staging} is not a regular file", path=rel)
        if st.st_size != files[rel].size:
            raise SizeMismatch(
                f"{rel}: {st.st_size} bytes on disk, {files[rel].size} expected",
                expected=files[rel].size,
                actual=st.st_size,
                path=rel,
            )
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            # Only when it differs: a file hard-linked from another cache
            # (the Hugging Face cache's blobs) shares its inode with it.
            os.chmod(staging / rel, FILE_MODE)
        expected.discard(rel)
    if expected:
        raise ValidationFailed(
            f"files missing after staging {name}: {', '.join(sorted(expected))}",
            model=name,
            files=sorted(expected),
        )
    for dirpath, dirnames, _ in os.walk(staging):
        for d in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), DIR_MODE)
    with contextlib.suppress(OSError):
        os.chmod(staging, DIR_MODE)
    total = sum(e.size for e in files.values())
    meta = fresh_metadata(
        name, model_id, revision, commit, source, total, len(files),
        access_count=previous.access_count if previous else 0,
        last_access=previous.last_access if previous else None,
        pinned=pinned or bool(previous and previous.pinned),
        stamp_update_check=True,
    )  # fmt: skip
    write_json_atomic(staging / CHECKSUM_FILE, manifest_json(files))
    write_json_atomic(staging / METADATA_FILE, meta.to_json())
    return meta


def fresh_metadata(
    name: str,
    model_id: str,
    revision: str,
    commit: str | None,
    source: str,
    total_bytes: int,
    file_count: int,
    *,
    stamp_update_check: bool = False,
    **extra: Any,
) -> Metadata:
    """The record of a model whose files were verified just now."""
    now = format_time(now_utc())
    if stamp_update_check:
        extra["last_update_check"] = now
    return Metadata(
        name=name,
        model_id=model_id,
        revision=revision,
        commit=commit,
        download_date=now,
        last_validated=now,
        download_source=source,
        total_size_bytes=total_bytes,
        file_count=file_count,
        validation_status="verified",
        **extra,
    )
