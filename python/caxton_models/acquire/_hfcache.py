"""The Hugging Face cache (``HF_HUB_CACHE``) as a source of verified bytes.

A machine that ran sentence-transformers, transformers or ``hf download``
holds ``models--{org}--{name}/`` with ``refs/<branch>`` (a commit),
``snapshots/<commit>/<path>`` (links) and ``blobs/<etag>``, where the etag of
an LFS file is its SHA-256 and of any other file its git blob id. So a blob
can be checked against what it claims to be, and against the Hub's listing
when there is one: :class:`HfCacheSource` hands such files to a download as
hard links (a copy only across file systems), each re-hashed first. A blob
that fails is left alone and fetched from the network instead. Nothing here
ever writes into the Hugging Face cache.

Offline, the snapshot itself is the listing (``resolve``): every file of it
is still checked against its own etag.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from caxton_models._core import git_blob_sha1_file, hash_files
from caxton_models.acquire._listing import RepoFile, RepoInfo
from caxton_models.errors import ModelNotFound, OfflineError
from caxton_models.store import FILE_MODE, is_hex

ENDPOINT_PREFIX = "hf-cache:"


def repo_folder(hub_cache: Path, repo_id: str) -> Path:
    return hub_cache / ("models--" + repo_id.replace("/", "--"))


def snapshot_commit(hub_cache: Path, repo_id: str, revision: str) -> str | None:
    """The commit ``revision`` names in the HF cache: itself when it is one,
    else what ``refs/<revision>`` records."""
    if is_hex(revision, 40):
        return revision
    ref = repo_folder(hub_cache, repo_id) / "refs" / revision
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if is_hex(commit, 40) else None


def _blob_of(link: Path, blobs: Path) -> Path | None:
    """The blob a snapshot entry points at, only inside ``blobs/``."""
    try:
        target = Path(os.path.realpath(link))
    except OSError:
        return None
    if target.parent != blobs.resolve() or not target.is_file():
        return None
    return target


def _listing(hub_cache: Path, repo_id: str, commit: str) -> dict[str, tuple[RepoFile, Path]]:
    """path -> (what the cache says the file is, its blob)."""
    folder = repo_folder(hub_cache, repo_id)
    snap, blobs = folder / "snapshots" / commit, folder / "blobs"
    out: dict[str, tuple[RepoFile, Path]] = {}
    if not snap.is_dir() or not blobs.is_dir():
        return out
    for dirpath, _dirs, names in os.walk(snap):
        for name in names:
            link = Path(dirpath) / name
            blob = _blob_of(link, blobs)
            if blob is None:  # a partial download, or a link out of the cache
                continue
            etag = blob.name
            lfs = is_hex(etag, 64)
            if not lfs and not is_hex(etag, 40):
                continue
            rel = link.relative_to(snap).as_posix()
            f = RepoFile(
                rel,
                blob.stat().st_size,
                etag if lfs else None,
                None if lfs else etag,
                lfs,
            )
            out[rel] = (f, blob)
    return out


def _matches(blob: Path, want: RepoFile, claimed: RepoFile, expected: str | None) -> str | None:
    """The blob's SHA-256 when its bytes are the file the listing (and the
    expected digest) names; None otherwise. Always reads the bytes."""
    if claimed.size != want.size:
        return None
    sha256 = hash_files([blob], "sha256")[0]
    if want.sha256 is not None and sha256 != want.sha256:
        return None
    if expected and sha256 != expected:
        return None
    small_ok = want.git_oid is not None and git_blob_sha1_file(blob) == want.git_oid
    return sha256 if want.sha256 is not None or small_ok else None


def _place(blob: Path, dest: Path) -> None:
    """A hard link where the file systems allow it, else a copy; never a
    symlink into a cache we do not own. A blob whose mode is not the one the
    store gives its files is copied: publishing would chmod the shared inode."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)
    try:
        if stat.S_IMODE(os.stat(blob).st_mode) != FILE_MODE:
            raise OSError(errno.EPERM, "mode differs")
        os.link(blob, dest, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        tmp = dest.with_name(dest.name + ".hfcopy")
        shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)


class HfCacheSource:
    """One Hugging Face cache folder; a HubLike for offline installs."""

    def __init__(self, hub_cache: Path) -> None:
        self.hub_cache = Path(hub_cache)

    def has(self, repo_id: str, revision: str) -> bool:
        commit = snapshot_commit(self.hub_cache, repo_id, revision)
        return commit is not None and bool(_listing(self.hub_cache, repo_id, commit))

    def resolve(self, repo_id: str, revision: str = "main") -> RepoInfo:
        commit = snapshot_commit(self.hub_cache, repo_id, revision)
        files = _listing(self.hub_cache, repo_id, commit) if commit else {}
        if commit is None or not files:
            raise ModelNotFound(
                f"{repo_id}@{revision} is not in the Hugging Face cache at {self.hub_cache}",
                kind="revision",
                repo_id=repo_id,
                revision=revision,
            )
        return RepoInfo(
            repo_id,
            revision,
            commit,
            tuple(f for f, _ in files.values()),
            ENDPOINT_PREFIX + str(self.hub_cache),
        )

    def link(
        self,
        info: RepoInfo,
        targets: Mapping[str, Path],
        expected: Mapping[str, str | None] | None = None,
    ) -> dict[str, str]:
        """Places every target whose blob checks out; returns their SHA-256.
        Files the cache lacks or whose bytes do not match are left out."""
        have = _listing(self.hub_cache, info.repo_id, info.commit)
        done: dict[str, str] = {}
        for path, dest in targets.items():
            if path not in have:
                continue
            claimed, blob = have[path]
            want = info.file(path)
            sha = _matches(blob, want, claimed, (expected or {}).get(path))
            if sha is None:
                continue
            _place(blob, Path(dest))
            done[path] = sha
        return done

    def download_files(
        self,
        info: RepoInfo,
        targets: Mapping[str, Path],
        *,
        expected: Mapping[str, str | None] | None = None,
        progress: Callable[[int], object] | None = None,
        max_concurrent: int = 3,
        time_limit: float | None = None,
        sync: bool = True,  # the cache's blobs are linked, never written: nothing to sync
    ) -> dict[str, str]:
        done = self.link(info, targets, expected)
        missing = sorted(set(targets) - set(done))
        if missing:
            raise OfflineError(
                f"{info.repo_id}@{info.commit}: {', '.join(missing)} missing from the Hugging "
                f"Face cache at {self.hub_cache} or failed verification there, and there is no "
                "network access to fetch them: allow downloads to repair",
                reason="offline",
            )
        return done


def describing_hub(hub: Any) -> bool:
    """Whether ``hub`` is a Hugging Face cache rather than a network client."""
    return isinstance(hub, HfCacheSource)
