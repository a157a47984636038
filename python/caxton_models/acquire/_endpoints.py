"""Endpoints and the token: which hosts are tried, how a URL is shown in a
message (never with a secret), and a token that no str/repr can reveal."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from caxton_models.config import env_endpoint
from caxton_models.errors import ConfigError

HF_HUB = "https://huggingface.co"
_SENSITIVE_QUERY = re.compile(
    r"token|sig|signature|key|auth|credential|password|secret|x-amz-", re.I
)


class _Token:
    """Holds the token so that no str/repr/format/traceback can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<TOKEN>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("the token cannot be pickled")


def redact_url(url: str) -> str:
    """``url`` with userinfo removed and secret-looking query values replaced (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (k, "<REDACTED>" if _SENSITIVE_QUERY.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="<>",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def default_endpoints(mirrors: Sequence[str] = (), *, include_hub: bool = True) -> list[str]:
    """The endpoint order of issue 4: ``HF_ENDPOINT``, the configured mirrors, then the Hub.

    Duplicates are dropped; ``include_hub=False`` keeps an air-gapped setup off the Internet.
    """
    out: list[str] = []
    for ep in [env_endpoint() or "", *mirrors, HF_HUB if include_hub else ""]:
        if ep and _normalize_endpoint(ep) not in out:
            out.append(_normalize_endpoint(ep))
    return out


def _normalize_endpoint(endpoint: str) -> str:
    ep = endpoint.strip().rstrip("/")
    parts = urlsplit(ep)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"endpoint {redact_url(ep)!r} is not an http(s) URL: use e.g. {HF_HUB} "
            "or http://mirror.example:8080"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            f"endpoint {redact_url(ep)!r} must not carry credentials or a query: "
            "pass the token with token= or HF_TOKEN"
        )
    return ep


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return p.scheme, (p.hostname or "").lower(), port
