"""One raw HTTP request to a server on 127.0.0.1, the path sent as written
(no client normalises it), for the mirror's protocol tests."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def request(
    url: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request; the path is sent as is (no normalisation of '..')."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()
