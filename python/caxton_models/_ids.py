"""What a hash, a commit, a repository id and a revision look like: the one home of
these rules, below every layer (it imports nothing of the package).

Every check matches the whole string (``fullmatch``): a ``^...$`` pattern used with
``re.match`` also accepts a trailing newline, which would let ``"<40 hex>\\n"`` pass as a
pinned commit and reach a path or a URL.
"""

from __future__ import annotations

import re
from typing import TypeGuard

__all__ = [
    "COMMIT",
    "check_repo_id",
    "check_revision",
    "is_commit",
    "is_hex",
    "is_repo_id",
    "is_revision",
    "is_sha256",
]

_HEX_DIGITS = frozenset("0123456789abcdef")
#: A full commit id as a pattern, for callers that route or split on it; use ``fullmatch``.
COMMIT = re.compile(r"[0-9a-f]{40}")
# The Hub's own limit: each of owner and name is 1-96 characters.
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")
# A branch or tag name (``main``, ``v1.0``, ``refs/pr/1``): segments that start with a
# letter or digit, so no segment is ``.``/``..``, none starts with ``-`` (an option to git)
# and nothing needs quoting in a URL path or a file name.
_REF_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REVISION = re.compile(rf"{_REF_PART}(?:/{_REF_PART})*")
_MAX_REVISION = 255


def is_hex(value: object, n: int) -> TypeGuard[str]:
    """``value`` is a string of exactly ``n`` lower-case hex digits."""
    return isinstance(value, str) and len(value) == n and _HEX_DIGITS.issuperset(value)


def is_commit(value: object) -> TypeGuard[str]:
    """A full git commit (or blob) id: 40 lower-case hex digits."""
    return is_hex(value, 40)


def is_sha256(value: object) -> TypeGuard[str]:
    """A SHA-256 digest: 64 lower-case hex digits."""
    return is_hex(value, 64)


def is_repo_id(value: object) -> TypeGuard[str]:
    """A Hub repository id, ``owner/name`` or a bare ``name`` (as the Hub allows)."""
    return isinstance(value, str) and bool(_REPO_ID.fullmatch(value)) and ".." not in value


def check_repo_id(value: str) -> str:
    """``value`` if it is a repository id, else a ``ValueError`` saying what one looks like."""
    return _required(
        is_repo_id(value),
        value,
        "model id: use 'owner/name' (letters, digits, '-', '_', '.'), "
        "e.g. sentence-transformers/all-MiniLM-L6-v2",
    )


def is_revision(value: object) -> TypeGuard[str]:
    """A branch, a tag or a commit: what may follow ``@`` in a model id."""
    return (
        isinstance(value, str)
        and len(value) <= _MAX_REVISION
        and bool(_REVISION.fullmatch(value))
        and ".." not in value
    )


def check_revision(value: str) -> str:
    """``value`` if it is a revision, else a ``ValueError`` saying what one looks like."""
    return _required(
        is_revision(value),
        value,
        "revision: use a branch or tag name (letters, digits, '-', '_', '.', '/'), or a commit sha",
    )


def _required(ok: bool, value: str, what: str) -> str:
    if not ok:
        raise ValueError(f"{value!r} is not a valid {what}")
    return value
