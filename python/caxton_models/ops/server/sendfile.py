"""Sending a file's bytes: ranges, ``If-Range``, ``sendfile(2)``, checked at open time.

A file is sent only while it is the file whose hashes the catalog holds: every open
compares the open file's stamp (device, inode, size, mtime, ctime) with the one taken
when its hashes were known good. A file that differs (a revision switched under a cache
entry, a folder edited in place) is hashed again; unless its SHA-256 is still the one
recorded, the open fails with :class:`StaleFile` and the server looks the file up again
in a rebuilt catalog. No byte is ever sent under an ETag that does not name it.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import re
import threading
from collections import OrderedDict
from typing import Any

from aiohttp import web

from caxton_models._core import hash_files
from caxton_models.errors import InvalidPath
from caxton_models.ops.server.catalog import ServedFile, Stamp, stamp_of
from caxton_models.ops.server.options import error_response
from caxton_models.store import open_regular

__all__ = ["StaleFile", "parse_range", "send_file"]

log = logging.getLogger("caxton_models.ops.server")

_SENDFILE_FALLBACK_CHUNK = 1 << 20
# Files hashed again after their stamp changed: (path, sha256) -> (stamp, the bytes matched).
_CHECKED: OrderedDict[tuple[str, str], tuple[Stamp, bool]] = OrderedDict()
_CHECKED_MAX = 4096
_CHECKED_LOCK = threading.Lock()


class StaleFile(OSError):
    """The file at a catalog's path no longer holds the bytes its hashes name."""


# Longer numbers are past any file's size; int() of thousands of digits is slow or refused.
_MAX_DIGITS = 19


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 1 << 63


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end exclusive); None: ignore the header (serve 200); False: unsatisfiable
    (416), as RFC 9110 section 14.1.2 says for one byte range."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # malformed or multi-range: serving the whole file is allowed (RFC 9110)
    first, last = m.group(1), m.group(2)
    if first == "":
        n = _number(last)
        if n == 0 or size == 0:
            return False  # a suffix of nothing, or of an empty file: no byte to send
        return max(0, size - n), size
    start = _number(first)
    if last != "" and _number(last) < start:
        return None  # last < first: not a valid range, so the header is ignored
    end = size if last == "" else min(_number(last) + 1, size)
    if start >= size:
        return False
    return start, end


async def send_file(
    request: web.Request, f: ServedFile, headers: dict[str, str], commit: str | None
) -> web.StreamResponse:
    """Send ``f`` (or a range of it) with sendfile; our ETag, not aiohttp's mtime-size one.

    aiohttp's FileResponse does the same sendfile call but sets its own ETag and
    understands If-Range only as a date, and would serve a precompressed ``.gz`` sibling
    when the client accepts gzip; a mirror must send exactly the repo's bytes.
    """
    loop = asyncio.get_running_loop()
    try:
        fobj = await _open_retrying(loop, f)
    except StaleFile:
        raise  # the caller looks the file up again
    except OSError as exc:
        log.warning("cannot serve %s: %s", f.local, exc)
        head = request.method == "HEAD"
        msg = f"{f.path} is unavailable on this mirror"
        return error_response(404, "EntryNotFound", msg, commit, head)
    try:
        size = f.size
        start, end, status = 0, size, 200
        rng = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if rng is not None and (if_range is None or if_range.strip() == headers.get("ETag")):
            parsed = parse_range(rng, size)
            if parsed is False:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if request.headers.get("If-None-Match", "").strip() == headers.get("ETag") and rng is None:
            return web.Response(status=304, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = mimetypes.guess_type(f.path)[0] or "application/octet-stream"
        resp.content_length = end - start
        resp.headers["Accept-Ranges"] = "bytes"
        await resp.prepare(request)
        if request.method == "HEAD" or end == start:
            await resp.write_eof()
            return resp
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        try:
            await loop.sendfile(transport, fobj, start, end - start)
        except NotImplementedError:  # e.g. a TLS transport: copy through user space
            await _copy_chunks(loop, resp, fobj, start, end)
        await resp.write_eof()
        return resp
    finally:
        fobj.close()


async def _open_retrying(loop: asyncio.AbstractEventLoop, f: ServedFile) -> Any:
    # A pull-through mirror republishes an entry as files arrive (rename old away, new in):
    # for an instant the path does not exist. The files are the same inodes after it.
    # Still gone: the catalog is out of date (a file handed out before its entry was
    # published, an evicted model), so the server looks it up again.
    for delay in (0.01, 0.05, 0.2, None):
        try:
            return await loop.run_in_executor(None, _open_checked, f)
        except FileNotFoundError as exc:
            if delay is None:
                raise StaleFile(f"{f.local} is gone ({exc.strerror})") from None
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _open_checked(f: ServedFile) -> Any:
    if f.local is None:
        raise FileNotFoundError(f"{f.path} has not been fetched")
    # A file swapped for a symlink after start-up is refused, not followed.
    try:
        fobj = open_regular(f.local)
    except InvalidPath:
        raise StaleFile(f"{f.local} is no longer a regular file") from None
    try:
        st = os.fstat(fobj.fileno())
        if st.st_size != f.size:
            raise StaleFile(
                f"{f.local} changed since it was verified ({st.st_size} != {f.size} bytes)"
            )
        if not _still_verified(f, stamp_of(st)):
            raise StaleFile(f"{f.local} no longer holds the bytes of sha256 {f.sha256}")
    except BaseException:
        fobj.close()
        raise
    return fobj


def _still_verified(f: ServedFile, now: Stamp) -> bool:
    """Whether the file with stamp ``now`` holds ``f``'s bytes; hashes it when unknown."""
    key = (str(f.local), f.sha256)
    with _CHECKED_LOCK:
        known = _CHECKED.get(key)
    if known is not None and known[0] == now:
        return known[1]  # a verdict on exactly these bytes wins over the catalog's stamp
    if f.stamp == now:
        return True
    assert f.local is not None
    digest = hash_files([f.local], algorithm="sha256")[0] if f.sha256 else ""
    try:
        after = stamp_of(os.lstat(f.local))
    except OSError:
        return False
    if after[:4] != now[:4]:
        # Replaced or written while hashed: the digest may be of other bytes. (A ctime
        # alone moves when a hard link is made or removed, which leaves the bytes be.)
        return False
    ok = digest == f.sha256
    if not ok:
        log.warning("not serving %s: its bytes changed since they were verified", f.local)
    with _CHECKED_LOCK:
        _CHECKED[key] = (after, ok)
        _CHECKED.move_to_end(key)
        while len(_CHECKED) > _CHECKED_MAX:
            _CHECKED.popitem(last=False)
    return ok


async def _copy_chunks(
    loop: asyncio.AbstractEventLoop, resp: web.StreamResponse, fobj: Any, start: int, end: int
) -> None:
    pos = start
    while pos < end:
        n = min(_SENDFILE_FALLBACK_CHUNK, end - pos)
        chunk = await loop.run_in_executor(None, os.pread, fobj.fileno(), n, pos)
        if not chunk:
            raise OSError("file shrank while being served")
        await resp.write(chunk)
        pos += len(chunk)
