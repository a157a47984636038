"""Offline distribution: export a cached model to a reproducible ``.tar.gz`` and
unpack such an archive (or any ``.tar``/``.tar.gz`` in the Hub's layout) safely.

An export holds the model's files at their repository paths plus
``caxton-manifest.json`` (files, sizes, SHA-256, revision, commit, the registry
spec, and the cache metadata when asked). Entries are sorted, with fixed
mtimes, owners and modes, and the gzip header carries no name or time, so the
same model exports to the same bytes on any machine.

Unpacking trusts nothing in the archive (RELIABILITY.md rows 33-38): only
regular files and directories, names checked by :mod:`caxton_models._paths`
(no ``..``, absolute paths, drive letters, Windows device names, our reserved
names), no duplicates, and caps on entry count, per-header size and total
decompressed bytes, counted as the bytes are read, never taken from headers.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import secrets
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from caxton_models._core import hash_files, sha256_file
from caxton_models._ids import is_commit, is_sha256
from caxton_models._paths import check_repo_path, check_unique, display, safe_join
from caxton_models.errors import ArchiveError, ChecksumMismatch, InvalidPath
from caxton_models.store import NEW_FILE_FLAGS, open_regular

__all__ = [
    "MANIFEST_NAME",
    "ArchiveLimits",
    "ExportManifest",
    "ExportResult",
    "export_dir",
    "extract_archive",
    "read_manifest",
]

MANIFEST_NAME = "caxton-manifest.json"
EXPORT_FORMAT = "caxton-export"
EXPORT_VERSION = 1
# 1980-01-01: the zip epoch, a fixed time that every tar and zip tool accepts.
FIXED_MTIME = 315532800
_COPY_BLOCK = 1 << 20
_MAX_MANIFEST_BYTES = 16 << 20
# Top-level names that are the cache's own and never a model file.
_CACHE_OWN = frozenset({"registry.json", ".lock", ".inuse", "downloads"})


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that make a bomb fail fast instead of filling the disk."""

    max_entries: int = 10_000
    max_total_bytes: int = 64 << 30
    max_ratio: int = 20  # decompressed bytes per compressed byte
    max_header_bytes: int = 1 << 20  # a PAX or GNU long-name header

    def budget(self, archive_size: int) -> int:
        return min(self.max_total_bytes, max(self.max_ratio * archive_size, 1 << 20))


@dataclass(frozen=True)
class ExportManifest:
    name: str
    model_id: str
    revision: str
    commit: str | None
    files: dict[str, tuple[int, str]]  # path -> (size, sha256)
    spec: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "name": self.name,
            "model_id": self.model_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": {p: {"size": s, "sha256": h} for p, (s, h) in sorted(self.files.items())},
            "spec": self.spec,
        }
        if self.metadata is not None:
            doc["metadata"] = self.metadata
        return doc

    @classmethod
    def from_json(cls, data: object, *, source: str) -> ExportManifest:
        def bad(why: str) -> ArchiveError:
            return ArchiveError(
                f"{source}: {MANIFEST_NAME} is malformed ({why}); re-export the model "
                "with `caxton model export`",
                path=source,
            )

        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise bad("not a caxton export manifest")
        if data.get("format_version") != EXPORT_VERSION:
            raise bad(f"format_version {data.get('format_version')!r} is not {EXPORT_VERSION}")
        for key in ("name", "model_id", "revision"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise bad(f"{key!r} missing")
        commit = data.get("commit")
        if commit is not None and not is_commit(commit):
            raise bad("commit is not 40 hex digits")
        raw = data.get("files")
        if not isinstance(raw, dict) or not raw:
            raise bad("no files")
        files: dict[str, tuple[int, str]] = {}
        for path in check_unique(list(raw), what="manifest entry"):
            e = raw[path]
            size = e.get("size") if isinstance(e, dict) else None
            digest = e.get("sha256") if isinstance(e, dict) else None
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad(f"bad size for {display(path)}")
            if not is_sha256(digest):
                raise bad(f"bad sha256 for {display(path)}")
            files[path] = (size, str(digest))
        spec = data.get("spec")
        meta = data.get("metadata")
        return cls(
            name=data["name"],
            model_id=data["model_id"],
            revision=data["revision"],
            commit=commit,
            files=files,
            spec=spec if isinstance(spec, dict) else None,
            metadata=meta if isinstance(meta, dict) else None,
        )


@dataclass(frozen=True)
class ExportResult:
    path: Path
    files: int
    bytes: int
    archive_bytes: int
    sha256: str


def read_manifest(path: Path, *, source: str) -> ExportManifest:
    with open_regular(path) as f:
        raw = f.read(_MAX_MANIFEST_BYTES + 1)
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{source}: {MANIFEST_NAME} is larger than 16 MiB", path=source)
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ArchiveError(f"{source}: {MANIFEST_NAME} is not JSON ({e})", path=source) from None
    return ExportManifest.from_json(data, source=source)


# ---------------------------------------------------------------------- export


def export_dir(
    model_dir: Path,
    files: Mapping[str, tuple[int, str]],
    output: str | os.PathLike[str],
    *,
    manifest: ExportManifest,
) -> ExportResult:
    """Write ``files`` (repo path -> (size, sha256)) of ``model_dir`` and the
    manifest to ``output`` as a reproducible tar.gz.

    The files are re-hashed first: exporting a corrupted cache entry would ship
    the corruption. The archive is built in a temporary file beside ``output``
    and renamed over it, so ``output`` is either the old file or the complete
    new one; a symlink at ``output`` is replaced, never followed.
    """
    out = Path(output).absolute()
    if out.is_dir() and not out.is_symlink():
        raise InvalidPath(f"{out} is a directory; give a file name such as model.tar.gz")
    names = sorted(check_unique(list(files), what="file name"))
    paths = [safe_join(model_dir, p) for p in names]
    for rel, digest in zip(names, hash_files(paths), strict=True):
        if digest != files[rel][1]:
            raise ChecksumMismatch(
                f"{rel} in {model_dir} no longer matches its recorded sha256; nothing was "
                "exported. Run `caxton model verify --full` to repair the model first.",
                expected=files[rel][1],
                actual=digest,
                path=rel,
            )
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    flags = NEW_FILE_FLAGS
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        raise InvalidPath(f"the folder {out.parent} does not exist", path=str(out)) from None
    try:
        # No file name and mtime 0 in the gzip header: byte-identical output.
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            body = json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()
            tar.addfile(_tarinfo(MANIFEST_NAME, len(body)), io.BytesIO(body))
            for rel, path in zip(names, paths, strict=True):
                with open_regular(path) as f:
                    tar.addfile(_tarinfo(rel, os.fstat(f.fileno()).st_size), f)
            tar.close()
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return ExportResult(
        path=out,
        files=len(names),
        bytes=sum(files[n][0] for n in names),
        archive_bytes=out.stat().st_size,
        sha256=sha256_file(out),
    )


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


# ---------------------------------------------------------------------- extract


class _Budget(io.RawIOBase):
    """A readable stream that fails once more than ``limit`` decompressed bytes
    have been read: a gzip bomb stops at the cap, whatever the headers claim."""

    def __init__(self, inner: IO[bytes], limit: int, source: str) -> None:
        self.inner = inner
        self.remaining = limit
        self.limit = limit
        self.source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.remaining + 1)
        data = self.inner.read(want)
        if len(data) > self.remaining:
            raise _too_large(self.source, f"more than {self.limit} bytes once decompressed")
        self.remaining -= len(data)
        view[: len(data)] = data
        return len(data)


def _too_large(source: str, why: str) -> ArchiveError:
    return ArchiveError(
        f"{source} is too large to install ({why}); nothing was installed. If the archive "
        "is genuine, unpack it yourself and run `caxton model install --source DIR`.",
        path=source,
        reason="too_large",
    )


def _make_tarinfo_class(max_header: int, source: str) -> type[tarfile.TarInfo]:
    class _CappedTarInfo(tarfile.TarInfo):
        # tarfile reads a PAX or GNU long-name header whole into memory; refuse a
        # huge one before it does.
        def _proc_pax(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            if self.size > max_header:
                raise _too_large(source, f"a {self.size}-byte PAX header")
            return super()._proc_pax(tf)  # type: ignore[misc]

        def _proc_gnulong(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
            if self.size > max_header:
                raise _too_large(source, f"a {self.size}-byte long-name header")
            return super()._proc_gnulong(tf)  # type: ignore[misc]

    return _CappedTarInfo


def extract_archive(
    archive: str | os.PathLike[str],
    dest: Path,
    *,
    limits: ArchiveLimits | None = None,
) -> ExportManifest | None:
    """Unpack ``archive`` (tar, tar.gz) into the empty directory ``dest``.

    Returns the export manifest when the archive carries one (it is parsed, not
    written to ``dest``). Raises :class:`ArchiveError` (or :class:`InvalidPath`
    for a bad name) on anything but plain files and directories with safe,
    unique names within the caps; the caller removes ``dest`` on failure.
    """
    limits = limits or ArchiveLimits()
    src = Path(archive)
    source = str(src)
    try:
        size = src.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(2, f"archive {src} does not exist", str(src)) from None
    budget = limits.budget(size)
    manifest: ExportManifest | None = None
    seen: set[str] = set()
    entries = 0
    with open_regular(src) as raw:
        magic = raw.read(2)
        raw.seek(0)
        inner: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw  # type: ignore[assignment]
        )
        stream = io.BufferedReader(_Budget(inner, budget, source), _COPY_BLOCK)
        tarinfo = _make_tarinfo_class(limits.max_header_bytes, source)
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=tarinfo)  # noqa: SIM115
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArchiveError(f"{source} is not a tar archive ({e})", path=source) from None
        with tar:
            try:
                for member in tar:
                    entries += 1
                    if entries > limits.max_entries:
                        raise _too_large(source, f"more than {limits.max_entries} entries")
                    name = _member_name(member, source)
                    if name is None:
                        continue
                    if name in seen:
                        raise ArchiveError(
                            f"{source} holds {display(name)} twice; refusing an archive whose "
                            "later entry would silently replace an earlier one",
                            path=name,
                        )
                    seen.add(name)
                    if member.isdir():
                        safe_join(dest, name).mkdir(parents=True, exist_ok=True)
                        continue
                    fobj = tar.extractfile(member)
                    if fobj is None:  # pragma: no cover - regular members always have data
                        raise ArchiveError(f"{source}: cannot read {display(name)}", path=name)
                    if name == MANIFEST_NAME:
                        body = fobj.read(_MAX_MANIFEST_BYTES + 1)
                        if len(body) > _MAX_MANIFEST_BYTES:
                            raise _too_large(source, f"{MANIFEST_NAME} over 16 MiB")
                        try:
                            doc = json.loads(body)
                        except ValueError as e:
                            raise ArchiveError(
                                f"{source}: {MANIFEST_NAME} is not JSON ({e})", path=source
                            ) from None
                        manifest = ExportManifest.from_json(doc, source=source)
                        continue
                    _write_member(fobj, dest, name, member.size, source)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise ArchiveError(
                    f"{source} is truncated or corrupt ({e}); nothing was installed", path=source
                ) from None
    files = sorted(seen - {MANIFEST_NAME})
    check_unique(files, what="archive member")
    return manifest


def _member_name(member: tarfile.TarInfo, source: str) -> str | None:
    raw = member.name
    name = raw[2:] if raw.startswith("./") else raw
    name = name.rstrip("/") if member.isdir() else name
    if name in ("", "."):
        return None
    kind = (
        "a symlink"
        if member.issym()
        else "a hard link"
        if member.islnk()
        else "a device"
        if member.ischr() or member.isblk()
        else "a FIFO"
        if member.isfifo()
        else "a sparse file"
        if member.issparse()
        else None
    )
    if kind is None and not (member.isreg() or member.isdir()):
        kind = f"an entry of type {member.type!r}"
    if kind is not None:
        raise ArchiveError(
            f"{source}: {display(raw)} is {kind}; archives may hold only regular files "
            "and directories. Nothing was installed.",
            path=raw,
            reason="member_type",
        )
    if name.split("/", 1)[0] in _CACHE_OWN:
        raise ArchiveError(
            f"{source}: {display(raw)} is a name of the cache's own; refusing the archive",
            path=raw,
            reason="reserved",
        )
    try:
        return check_repo_path(name, what="archive member")
    except InvalidPath as e:
        raise ArchiveError(
            f"{source}: {e}", path=raw, reason=getattr(e, "reason", "bad_name")
        ) from None


def _write_member(fobj: IO[bytes], dest: Path, name: str, declared: int, source: str) -> None:
    target = safe_join(dest, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = NEW_FILE_FLAGS
    written = 0
    with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
        while chunk := fobj.read(_COPY_BLOCK):
            written += len(chunk)
            out.write(chunk)
    if written != declared:
        raise ArchiveError(
            f"{source}: {display(name)} is truncated ({written} of {declared} bytes)", path=name
        )
