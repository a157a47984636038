"""The download engine against a fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from caxton_models import _core
from caxton_models.errors import (
    AccessDenied,
    ChecksumMismatch,
    DownloadError,
    InsufficientDiskSpace,
    NetworkError,
    NetworkTimeout,
    ServerError,
    SizeMismatch,
)
from tests.support.download import MIB, blob, leftovers, sha
from tests.support.faultserver import Faults, FaultServer


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def test_plain_download_verifies_and_renames(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(3 * MIB + 17)
    url = srv.add("/f", data)
    dest = tmp_path / "sub" / "f.bin"
    r = _core.download(url, dest, sha256=sha(data), size=len(data))
    assert dest.read_bytes() == data
    assert r.sha256 == sha(data)
    assert r.bytes == len(data) and r.fetched == len(data) and r.resumed_bytes == 0
    assert r.ranges >= 1 and r.connections >= 1
    assert leftovers(dest.parent) == []
    # Every request asked for identity encoding and a byte range.
    for req in srv.requests:
        assert req.headers.get("accept-encoding") == "identity"
        assert req.range is not None


def test_parallel_ranges_cover_the_file(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(9 * MIB + 5)
    url = srv.add("/f", data)
    r = _core.download(url, tmp_path / "f", sha256=sha(data), connections=4, chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    assert r.ranges >= 10  # 1 MiB chunks
    assert r.connections > 1
    assert srv.bytes_sent("/f") <= len(data) + 4 * MIB  # stolen halves may overlap a little


def test_empty_file(srv: FaultServer, tmp_path: Path) -> None:
    url = srv.add("/empty", b"")
    r = _core.download(url, tmp_path / "e", sha256=sha(b""))
    assert (tmp_path / "e").read_bytes() == b""
    assert r.bytes == 0


def test_checksum_mismatch_removes_everything(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(MIB)
    url = srv.add("/f", data, Faults(flip_byte=12345))
    with pytest.raises(ChecksumMismatch) as ei:
        _core.download(url, tmp_path / "f", sha256=sha(data))
    assert ei.value.expected == sha(data)
    flipped = bytearray(data)
    flipped[12345] ^= 0xFF
    assert ei.value.actual == sha(bytes(flipped))
    assert not (tmp_path / "f").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("knob", ["zeros", "html_200"])
def test_wrong_content_is_a_checksum_mismatch(srv: FaultServer, tmp_path: Path, knob: str) -> None:
    data = blob(MIB)
    faults = Faults(zeros=True) if knob == "zeros" else Faults(html_200=True)
    url = srv.add("/f", data, faults)
    with pytest.raises(ChecksumMismatch):
        _core.download(url, tmp_path / "f", sha256=sha(data))
    assert not (tmp_path / "f").exists()


def test_gzip_despite_identity_is_not_stored(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(MIB)
    url = srv.add("/f", data, Faults(gzip=True))
    with pytest.raises(DownloadError):
        _core.download(url, tmp_path / "f", sha256=sha(data))
    assert not (tmp_path / "f").exists()


def test_declared_size_mismatch(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(MIB)
    url = srv.add("/f", data)
    with pytest.raises(SizeMismatch) as ei:
        _core.download(url, tmp_path / "f", size=len(data) + 1)
    assert (ei.value.expected, ei.value.actual) == (len(data) + 1, len(data))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [401, 403, 404, 400])
def test_client_errors_fail_at_once(srv: FaultServer, tmp_path: Path, status: int) -> None:
    url = srv.add("/f", b"x", Faults(status_always=status))
    expected = AccessDenied if status in (401, 403) else ServerError
    with pytest.raises(expected) as ei:
        _core.download(url, tmp_path / "f")
    assert srv.gets("/f") == 1
    assert getattr(ei.value, "status", None) == status
    assert leftovers(tmp_path) == []


def test_missing_path_is_a_404(srv: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="not found") as ei:
        _core.download(srv.url("/nope"), tmp_path / "f")
    assert ei.value.status == 404


@pytest.mark.parametrize("seq", [[500, 503], [408], [429, 502]])
def test_transient_statuses_are_retried(srv: FaultServer, tmp_path: Path, seq: list[int]) -> None:
    data = blob(MIB)
    url = srv.add("/f", data, Faults(status_seq=seq))
    r = _core.download(url, tmp_path / "f", sha256=sha(data))
    assert r.retries == len(seq)
    assert (tmp_path / "f").read_bytes() == data


def test_retry_after_is_honoured(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(1000)
    url = srv.add("/f", data, Faults(status_seq=[429], retry_after="2"))
    times: list[float] = []
    import time

    srv.on_request = lambda _r: times.append(time.monotonic())
    _core.download(url, tmp_path / "f", sha256=sha(data))
    assert len(times) == 2
    assert times[1] - times[0] >= 1.9  # the server asked for 2 s


def test_retries_exhausted_raise_server_error(srv: FaultServer, tmp_path: Path) -> None:
    url = srv.add("/f", b"x" * 100, Faults(status_always=503))
    with pytest.raises(ServerError) as ei:
        _core.download(url, tmp_path / "f", retries=1)
    assert ei.value.status == 503
    assert srv.gets("/f") == 2


def test_connection_refused_is_a_network_error(tmp_path: Path) -> None:
    with FaultServer() as s:
        url = s.url("/f")
    with pytest.raises(NetworkError):
        _core.download(url, tmp_path / "f", retries=1)


def test_server_ignoring_range_restarts_from_zero(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(5 * MIB)
    url = srv.add("/f", data, Faults(ignore_range=True))
    r = _core.download(url, tmp_path / "f", sha256=sha(data), connections=4, chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    assert srv.gets("/f") == 1  # the 200 answer to the first request is the whole file
    assert r.bytes == len(data)


def test_bad_content_range_is_never_spliced(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(4 * MIB)
    url = srv.add("/f", data, Faults(bad_content_range=True, bad_content_range_times=1))
    r = _core.download(url, tmp_path / "f", sha256=sha(data), chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    assert r.retries >= 1


def test_always_bad_content_range_falls_back_to_one_stream(
    srv: FaultServer, tmp_path: Path
) -> None:
    data = blob(2 * MIB)
    url = srv.add("/f", data, Faults(bad_content_range=True))
    _core.download(url, tmp_path / "f", sha256=sha(data), chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data


def test_etag_change_restarts_with_consistent_bytes(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(3 * MIB)
    url = srv.add("/f", data, Faults(etag_change=True))
    _core.download(url, tmp_path / "f", sha256=sha(data), connections=3, chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    # Range requests after the first carried If-Range with the first ETag.
    assert any("if-range" in r.headers for r in srv.requests)


def test_dropped_connection_resumes_the_range(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(4 * MIB)
    url = srv.add("/f", data, Faults(drop_at=MIB + 100, drop_times=2))
    r = _core.download(url, tmp_path / "f", sha256=sha(data), connections=1)
    assert (tmp_path / "f").read_bytes() == data
    assert r.retries == 2
    # Resumed where the drop happened: nothing fetched twice.
    assert r.fetched == len(data)


@pytest.mark.parametrize("cl", ["+100", "none", "junk", "-1"])
def test_bad_content_length(srv: FaultServer, tmp_path: Path, cl: str) -> None:
    data = blob(2 * MIB)
    url = srv.add("/f", data, Faults(content_length=cl))
    try:
        _core.download(url, tmp_path / "f", sha256=sha(data), retries=2)
    except DownloadError:
        # A client may refuse a malformed length; then nothing is published.
        assert not (tmp_path / "f").exists()
    else:
        assert (tmp_path / "f").read_bytes() == data


def test_short_body_then_complete(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(2 * MIB)
    url = srv.add("/f", data, Faults(drop_at=1000, drop_times=1))
    r = _core.download(url, tmp_path / "f", sha256=sha(data))
    assert r.retries == 1
    assert (tmp_path / "f").read_bytes() == data


def test_long_body_without_ranges_is_a_size_mismatch(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(MIB)
    url = srv.add("/f", data, Faults(ignore_range=True, long_body=4096))
    with pytest.raises(SizeMismatch):
        _core.download(url, tmp_path / "f", size=len(data))
    assert leftovers(tmp_path) == []


def test_long_body_on_ranges_is_cut_at_the_range_end(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(2 * MIB)
    url = srv.add("/f", data, Faults(long_body=4096))
    _core.download(url, tmp_path / "f", sha256=sha(data), chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data


def test_stall_is_retried(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(2 * MIB)
    url = srv.add("/f", data, Faults(stall_after=300_000, stall_seconds=30))
    r = _core.download(url, tmp_path / "f", sha256=sha(data), timeout=1.0)
    assert r.retries >= 1
    assert (tmp_path / "f").read_bytes() == data


def test_stall_exhausting_retries_is_a_timeout(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(MIB)
    url = srv.add("/f", data, Faults(stall_after=1000, stall_seconds=30, stall_times=99))
    with pytest.raises(NetworkTimeout):
        _core.download(url, tmp_path / "f", timeout=0.5, retries=1)
    # The bytes that did arrive are kept for a resume.
    assert any(n.endswith(".part.state") for n in leftovers(tmp_path))


@pytest.mark.timeout(60)
def test_far_slower_range_is_reissued(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(12 * MIB)
    # The first response crawls at 20 kB/s (its 1 MiB would take ~50 s); the
    # others are fast. The crawling range must be re-issued elsewhere.
    url = srv.add("/f", data, Faults(slow_bps=20_000, slow_times=1))
    r = _core.download(url, tmp_path / "f", sha256=sha(data), connections=4, chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    assert r.retries >= 1
    assert srv.gets("/f") > 12


def test_short_outage_is_survived(srv: FaultServer, tmp_path: Path) -> None:
    import time

    data = blob(MIB)
    url = srv.add("/f", data, Faults(outage_until=time.monotonic() + 3))
    r = _core.download(url, tmp_path / "f", sha256=sha(data))
    assert r.retries >= 1
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.slow
def test_thirty_second_outage_is_survived(srv: FaultServer, tmp_path: Path) -> None:
    import time

    data = blob(MIB)
    url = srv.add("/f", data, Faults(outage_until=time.monotonic() + 30))
    r = _core.download(url, tmp_path / "f", sha256=sha(data))
    assert (tmp_path / "f").read_bytes() == data
    assert r.retries >= 3


def test_authorization_not_sent_to_other_origin(tmp_path: Path) -> None:
    data = blob(MIB)
    with FaultServer() as hub, FaultServer() as cdn:
        cdn_url = cdn.add("/blob", data)
        url = hub.add("/resolve/f", b"", Faults(redirect_to=cdn_url))
        token = "hf_SENTINEL_download_token"
        r = _core.download(
            url, tmp_path / "f", sha256=sha(data), headers={"Authorization": f"Bearer {token}"}
        )
        assert (tmp_path / "f").read_bytes() == data
        assert r.url.startswith(cdn.origin)
        assert hub.requests and all(
            q.headers.get("authorization") == f"Bearer {token}" for q in hub.requests
        )
        assert cdn.requests and all("authorization" not in q.headers for q in cdn.requests)


def test_redirect_loop_and_bad_scheme_refused(srv: FaultServer, tmp_path: Path) -> None:
    srv.add("/loop", b"", Faults(redirect_to="/loop"))
    with pytest.raises(NetworkError, match="more than 10 redirects"):
        _core.download(srv.url("/loop"), tmp_path / "f")
    srv.add("/ftp", b"", Faults(redirect_to="ftp://127.0.0.1/x"))
    with pytest.raises(NetworkError, match="only http and https"):
        _core.download(srv.url("/ftp"), tmp_path / "f")


def test_insufficient_disk_space_before_any_request(srv: FaultServer, tmp_path: Path) -> None:
    url = srv.add("/f", b"x")
    with pytest.raises(InsufficientDiskSpace) as ei:
        _core.download(url, tmp_path / "f", size=1 << 60)
    assert ei.value.required == 1 << 60
    assert 0 < (ei.value.available or 0) < 1 << 60
    assert srv.gets("/f") == 0


def test_progress_deltas_sum_to_size(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(6 * MIB)
    url = srv.add("/f", data, Faults(slow_bps=20 * MIB))
    deltas: list[int] = []
    _core.download(url, tmp_path / "f", progress=deltas.append, chunk_size=MIB)
    assert sum(deltas) == len(data)
    assert len(deltas) >= 2  # called while running, not once at the end


def test_raising_progress_cancels_and_keeps_state(srv: FaultServer, tmp_path: Path) -> None:
    data = blob(8 * MIB)
    # Slow enough (~1 s even on 8 connections) that the first progress tick
    # comes mid-transfer.
    url = srv.add("/f", data, Faults(slow_bps=MIB))

    def boom(_n: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        _core.download(url, tmp_path / "f", progress=boom, chunk_size=MIB)
    assert not (tmp_path / "f").exists()
    # A second call resumes from what the first one kept.
    r = _core.download(url, tmp_path / "f", sha256=sha(data), chunk_size=MIB)
    assert (tmp_path / "f").read_bytes() == data
    assert r.resumed_bytes + r.fetched >= len(data)


def test_download_many_in_order(srv: FaultServer, tmp_path: Path) -> None:
    files = {f"/f{i}": blob(MIB + i * 1000, seed=i) for i in range(5)}
    items: list[_core.DownloadItem] = []
    for p, d in files.items():
        items.append({"url": srv.add(p, d), "dest": tmp_path / p[1:], "sha256": sha(d)})
    total: list[int] = []
    rs = _core.download_many(items, max_concurrent=2, connections=4, progress=total.append)
    assert [r.sha256 for r in rs] == [sha(d) for d in files.values()]
    for p, d in files.items():
        assert (tmp_path / p[1:]).read_bytes() == d
    assert sum(total) == sum(len(d) for d in files.values())


def test_download_many_raises_first_failure(srv: FaultServer, tmp_path: Path) -> None:
    ok = blob(1000)
    items: list[_core.DownloadItem] = [
        {"url": srv.add("/ok", ok), "dest": tmp_path / "ok", "sha256": sha(ok)},
        {"url": srv.url("/missing"), "dest": tmp_path / "missing"},
    ]
    with pytest.raises(ServerError):
        _core.download_many(items)


def test_invalid_arguments(srv: FaultServer, tmp_path: Path) -> None:
    url = srv.add("/f", b"x")
    with pytest.raises(ValueError):
        _core.download(url, tmp_path / "f", sha256="abc")
    with pytest.raises(ValueError):
        _core.download("ftp://example/x", tmp_path / "f")
    with pytest.raises(ValueError):
        _core.download(url, tmp_path / "f", connections=0)
    with pytest.raises(IsADirectoryError):
        _core.download(url, tmp_path)


def test_unwritable_destination(srv: FaultServer) -> None:
    """A folder the process cannot write to gives PermissionDenied naming it.

    Root writes anywhere, so as root the download runs in a child process that
    drops to ``nobody`` after importing the extension.
    """
    url = srv.add("/f", b"x")
    base = Path(tempfile.mkdtemp(prefix="caxton-ro-"))
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        script = (
            "import os, sys\n"
            "from caxton_models import _core\n"
            "from caxton_models.errors import PermissionDenied\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    _core.download(sys.argv[1], sys.argv[2])\n"
            "except PermissionDenied as e:\n"
            "    assert sys.argv[3] in str(e), str(e)\n"
            "    print('denied')\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, url, str(ro / "f"), str(ro)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=base,
            check=False,
        )
        assert out.stdout.strip() == "denied", (out.stdout, out.stderr)
        assert not (ro / "f").exists()
    finally:
        shutil.rmtree(base)
