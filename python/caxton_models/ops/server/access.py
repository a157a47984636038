"""Who may fetch what: allow/deny lists of repositories, and a bearer token clients must send.

- ``allow``/``deny`` are shell globs over repo ids (``sentence-transformers/*``); a deny
  match wins, and a non-empty allow list admits only what it matches. A refused repo
  answers 403 with ``X-Error-Code: RepoNotAllowed`` before anything is looked up or
  fetched upstream, so a pull-through mirror never fetches what it may not serve.
- ``tokens``: when set, every request but ``/health`` needs ``Authorization: Bearer
  <token>`` (a client's ``HF_TOKEN``); otherwise 401, the Hub's answer to bad
  credentials. Only SHA-256 digests of the tokens are kept, compared with
  :func:`hmac.compare_digest`, so the time taken says nothing about how much of a guess
  was right; no token, good or bad, is ever logged or echoed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AccessRules", "read_tokens"]

_HEALTH_PATHS = frozenset({"/health"})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class AccessRules:
    """The mirror's access policy; the default admits everyone to every repo."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _token_digests: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def build(
        cls, *, allow: Iterable[str] = (), deny: Iterable[str] = (), tokens: Iterable[str] = ()
    ) -> AccessRules:
        digests = tuple(_digest(t) for t in tokens if t)
        return cls(tuple(allow), tuple(deny), digests)

    @property
    def needs_token(self) -> bool:
        return bool(self._token_digests)

    def repo_allowed(self, repo_id: str) -> bool:
        if any(fnmatch.fnmatchcase(repo_id, g) for g in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(repo_id, g) for g in self.allow)

    def token_ok(self, authorization: str | None) -> bool:
        """Whether ``Authorization`` carries one of the tokens (always true without tokens)."""
        if not self._token_digests:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        got = _digest(value.strip()) if scheme.lower() == "bearer" else b""
        # Every digest is compared, so the time does not depend on which one matched.
        ok = False
        for want in self._token_digests:
            ok |= hmac.compare_digest(got, want)
        return ok

    def exempt(self, path: str) -> bool:
        """Paths open without a token: the orchestrator's probe."""
        return path in _HEALTH_PATHS


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """Tokens from a file, one a line (``#`` comments and blank lines skipped).

    A file, not a command-line value: arguments are visible to every user in ``ps``.
    """
    text = Path(path).read_text(encoding="utf-8")
    tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not tokens:
        raise ValueError(f"{path} holds no token (one a line)")
    bad = [i for i, t in enumerate(tokens, 1) if any(c.isspace() for c in t) or len(t) < 8]
    if bad:
        raise ValueError(
            f"{path}: line(s) {', '.join(map(str, bad))} are not tokens "
            "(at least 8 characters, no spaces)"
        )
    return tokens
