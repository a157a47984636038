"""``caxton model export --hf-cache [DIR]``: a verified model written into the
Hugging Face cache layout, so ``SentenceTransformer(repo_id)``,
``hf_hub_download`` and transformers find it offline on the same machine.

``models--{org}--{name}/blobs/<etag>`` (the SHA-256 of an LFS file, the git
blob id of any other), ``snapshots/<commit>/<path>`` as relative links to
the blobs, and ``refs/<revision>`` naming the commit, as huggingface_hub
writes them. Blobs are hard links to the cache's verified files where the
file systems allow it (a copy otherwise), each re-hashed first; a blob that
is already there is kept only when its bytes match its name. Nothing in the
caxton cache is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from caxton_models._core import git_blob_sha1_file, hash_files
from caxton_models._paths import check_repo_path, safe_join
from caxton_models.errors import ChecksumMismatch, ConfigError
from caxton_models.store import InstalledModel, is_hex


@dataclass(frozen=True)
class HfExport:
    repo_folder: Path
    commit: str
    ref: str | None
    files: int
    linked: int  # blobs that share the cache's inode (no second copy)


def _etag(path: Path, sha256: str, git_oid: str | None, lfs: bool) -> str:
    return sha256 if lfs else (git_oid or git_blob_sha1_file(path))


def _blob_ok(blob: Path, etag: str) -> bool:
    if not blob.is_file() or blob.is_symlink():
        return False
    if len(etag) == 64:
        return hash_files([blob], "sha256")[0] == etag
    return git_blob_sha1_file(blob) == etag


def _write_blob(src: Path, blob: Path) -> bool:
    """Places ``src`` at ``blob`` atomically; True for a hard link."""
    tmp = blob.with_name(f"{blob.name}.caxton-{os.getpid()}.incomplete")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp, follow_symlinks=False)
        linked = True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(src, tmp)
        linked = False
    os.replace(tmp, blob)
    return linked


def _link(snapshot_file: Path, blob: Path) -> None:
    target = os.path.relpath(blob, snapshot_file.parent)
    snapshot_file.parent.mkdir(parents=True, exist_ok=True)
    if snapshot_file.is_symlink() and os.readlink(snapshot_file) == target:
        return
    tmp = snapshot_file.with_name(snapshot_file.name + f".caxton-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, snapshot_file)


def export_hf_cache(model: InstalledModel, hub_cache: Path) -> HfExport:
    """Writes ``model`` (installed, with its manifest) into ``hub_cache``."""
    meta, manifest = model.metadata, model.manifest
    if meta is None or manifest is None or not is_hex(meta.commit or "", 40):
        raise ConfigError(
            f"{model.name} records no Hub commit (installed from a folder?): the Hugging Face "
            "cache names every snapshot by its commit; download it from a Hub or mirror first",
            key="hf-cache",
        )
    commit = str(meta.commit)
    repo = hub_cache / ("models--" + meta.model_id.replace("/", "--"))
    blobs, snap = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    linked = 0
    for rel, entry in sorted(manifest.items()):
        src = safe_join(model.path, rel)
        if hash_files([src], "sha256")[0] != entry.sha256:
            raise ChecksumMismatch(
                f"{rel} of {model.name} no longer matches its manifest: run `caxton model "
                f"verify {model.name} --full` and repair before exporting",
                expected=entry.sha256,
                path=rel,
            )
        etag = _etag(src, entry.sha256, entry.git_oid, entry.lfs)
        blob = blobs / etag
        if not _blob_ok(blob, etag):
            linked += _write_blob(src, blob)
        elif os.stat(blob).st_ino == os.stat(src).st_ino:
            linked += 1
        # The snapshot's entries are links by design: checked as a name only.
        _link(snap / check_repo_path(rel), blob)
    ref = meta.revision if meta.revision and not is_hex(meta.revision, 40) else None
    refs = repo / "refs"
    refs.mkdir(exist_ok=True)
    for name in {ref or "main"}:
        tmp = refs / f".{name}.caxton-{os.getpid()}"
        tmp.write_text(commit, encoding="ascii")
        os.replace(tmp, refs / name)
    return HfExport(repo, commit, ref or "main", len(manifest), linked)
