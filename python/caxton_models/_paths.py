"""Safe file names: every path that comes from outside (a Hub listing, a manifest,
an archive, a user's folder) passes through here before any I/O.

The rules are the same on every OS, so a listing that would be unsafe on
Windows is refused on Linux too (a cache may be copied between machines):

* relative, ``/``-separated, no empty, ``.`` or ``..`` component, no backslash;
* no drive (``C:``), no ``:`` at all (NTFS streams), no ``<>"|?*``, no control
  character, no bidi override, no lone surrogate (invalid UTF-8);
* no Windows reserved device name (``CON``, ``nul.txt``, ``COM1``...), no
  component ending in a dot or a space;
* a component of at most 255 UTF-8 bytes, a path of at most 1024 bytes (well
  under Windows' MAX_PATH once joined to a cache root is the caller's business);
* names beginning ``.caxton_`` are ours and never a repository file.

:func:`check_unique` also refuses two names that collide after Unicode NFC
normalisation and case folding (they would overwrite each other on macOS or
Windows). :func:`safe_join` joins a checked name to a root and refuses to walk
through a symlink, so a planted link cannot redirect a write.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from caxton_models.errors import InvalidPath

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "RESERVED_PREFIX",
    "check_name",
    "check_repo_path",
    "check_unique",
    "display",
    "safe_join",
]

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
RESERVED_PREFIX = ".caxton_"

_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "CONIN$",
    "CONOUT$",
    *(f"COM{c}" for c in "0123456789¹²³"),
    *(f"LPT{c}" for c in "0123456789¹²³"),
}
_FORBIDDEN_CHARS = set('<>:"|?*\\')
# Bidi embeddings/overrides/isolates and other invisible format characters
# that make a name display differently from what it is.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def display(name: object) -> str:
    """A name as it may be shown in an error: escaped, never raw control bytes."""
    text = repr(name)
    return text if len(text) <= 200 else text[:200] + "...'"


def _fail(path: object, why: str, what: str) -> InvalidPath:
    return InvalidPath(
        f"refusing {what} {display(path)}: {why}. Nothing was written; "
        "the source (repository listing, manifest or archive) is malformed or hostile.",
        path=str(path),
        reason=why,
    )


def _check_component(comp: str, path: str, what: str) -> None:
    if comp in ("", ".", ".."):
        raise _fail(path, f"component {comp!r} is empty or a dot reference", what)
    for ch in comp:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            raise _fail(path, "contains a control character", what)
        if ch in _FORBIDDEN_CHARS:
            raise _fail(path, f"contains the character {ch!r}", what)
        if ch in _BIDI:
            raise _fail(path, "contains a bidirectional-text control character", what)
        if 0xD800 <= code <= 0xDFFF:
            raise _fail(path, "is not valid UTF-8 (lone surrogate)", what)
    if comp[-1] in ". ":
        raise _fail(path, "a component ends in a dot or a space (Windows drops it)", what)
    stem = comp.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        raise _fail(path, f"{stem} is a reserved device name on Windows", what)
    if len(comp.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise _fail(path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes", what)


def check_repo_path(path: object, *, what: str = "file name") -> str:
    """Return ``path`` unchanged if it is a safe relative repository path, else raise
    :class:`InvalidPath`. Pure: touches no file."""
    if not isinstance(path, str):
        raise _fail(path, f"is a {type(path).__name__}, not a string", what)
    if not path:
        raise _fail(path, "is empty", what)
    if "\x00" in path:
        raise _fail(path, "contains a NUL byte", what)
    if "\\" in path:
        raise _fail(path, "contains a backslash (a Windows separator)", what)
    if path.startswith("/"):
        raise _fail(path, "is absolute", what)
    if len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        raise _fail(path, "starts with a drive letter", what)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, "is not valid UTF-8", what) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _fail(path, f"is longer than {MAX_PATH_BYTES} bytes", what)
    parts = path.split("/")
    for comp in parts:
        _check_component(comp, path, what)
    if any(p.startswith(RESERVED_PREFIX) for p in parts):
        raise _fail(path, f"names beginning {RESERVED_PREFIX!r} are reserved for caxton", what)
    return path


def check_name(name: object) -> str:
    """A registry name (one directory in the cache): letters, digits, ``._+-``."""
    if not isinstance(name, str) or not _REGISTRY_NAME.fullmatch(name):
        raise _fail(
            name,
            "a model name must be 1-128 characters of letters, digits, '.', '_', '+', '-' "
            "and start with a letter or digit",
            "model name",
        )
    check_repo_path(name, what="model name")
    return name


def _fold(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def check_unique(paths: Iterable[str], *, what: str = "file name") -> list[str]:
    """Check every path and refuse the whole set if two collide after NFC
    normalisation and case folding (or one is both a file and a directory)."""
    checked = [check_repo_path(p, what=what) for p in paths]
    seen: dict[str, str] = {}
    for p in checked:
        key = _fold(p)
        if key in seen:
            raise _fail(
                p, f"collides with {display(seen[key])} on case-insensitive filesystems", what
            )
        seen[key] = p
    dirs = {_fold(p).rsplit("/", 1)[0] for p in checked if "/" in p}
    parents: set[str] = set()
    for d in dirs:
        parts = d.split("/")
        parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for p in checked:
        if _fold(p) in parents:
            raise _fail(p, "is both a file and a directory", what)
    return checked


def safe_join(root: str | os.PathLike[str], rel: str, *, what: str = "file name") -> Path:
    """``root / rel`` after :func:`check_repo_path`, refusing to pass through a
    symlink or a non-directory at any existing intermediate component. The last
    component may not be a symlink either (it may be absent)."""
    check_repo_path(rel, what=what)
    base = Path(root)
    current = base
    parts = rel.split("/")
    for i, comp in enumerate(parts):
        current = current / comp
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return base.joinpath(*parts)
        if stat.S_ISLNK(st.st_mode):
            raise _fail(
                rel, f"{current} is a symlink; links inside the cache are never followed", what
            )
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise _fail(rel, f"{current} is not a directory", what)
    return current
