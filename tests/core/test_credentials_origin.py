"""Credentials go only to the origin the caller named, on every request.

A Hub redirects its LFS files to a CDN on another origin (here: another
port, or another host name for the same socket). The engine then sends many
requests straight to the CDN: the parallel Range requests, retries, resumes,
the plain fallback, and those of ``download_many``. None of them may carry
the Authorization, Cookie or Proxy-Authorization the caller gave for the Hub
(RELIABILITY.md rows 12 and 46).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from caxton_models import _core
from tests.support.download import MIB, blob, leftovers, sha
from tests.support.faultserver import Faults, FaultServer, Request

TOKEN = "hf_SENTINEL_credentials_origin"
CREDENTIALS = {
    "Authorization": f"Bearer {TOKEN}",
    "Cookie": f"session={TOKEN}",
    "Proxy-Authorization": f"Basic {TOKEN}",
}
SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")
# Small chunks, so that one file takes many Range requests.
CHUNK = MIB // 4


@pytest.fixture
def origin() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


@pytest.fixture
def cdn() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def carries_credentials(r: Request) -> bool:
    return any(h in r.headers for h in SECRET_HEADERS)


def assert_clean(reqs: list[Request], at_least: int = 1) -> None:
    """No request carried any credential, nor the token anywhere."""
    assert len(reqs) >= at_least, [r.path for r in reqs]
    leaked = [(r.path, r.range) for r in reqs if carries_credentials(r)]
    assert leaked == [], f"credentials sent to another origin: {leaked}"
    assert all(TOKEN not in str(r.headers) for r in reqs)


def assert_authenticated(reqs: list[Request]) -> None:
    """The caller's origin got every credential, on every request."""
    assert reqs
    for r in reqs:
        assert r.headers.get("authorization") == CREDENTIALS["Authorization"]
        assert r.headers.get("cookie") == CREDENTIALS["Cookie"]


def redirected(
    origin: FaultServer, cdn: FaultServer, data: bytes, faults: Faults | None = None
) -> str:
    """A Hub URL that answers 302 to the CDN, which serves `data`."""
    cdn_url = cdn.add("/blob", data, faults)
    return origin.add("/resolve/f", b"", Faults(redirect_to=cdn_url))


def test_parallel_ranges_to_the_redirect_target_carry_no_credentials(
    origin: FaultServer, cdn: FaultServer, tmp_path: Path
) -> None:
    data = blob(6 * MIB)
    url = redirected(origin, cdn, data)
    r = _core.download(
        url,
        tmp_path / "f",
        sha256=sha(data),
        headers=CREDENTIALS,
        chunk_size=CHUNK,
        connections=4,
    )
    assert (tmp_path / "f").read_bytes() == data
    assert r.ranges >= len(data) // CHUNK
    assert r.url.startswith(cdn.origin)
    assert_clean(cdn.requests, at_least=len(data) // CHUNK)
    assert all(q.range is not None for q in cdn.requests)
    assert_authenticated(origin.requests)


@pytest.mark.parametrize(
    ("hub_host", "cdn_host"), [("localhost", "127.0.0.1"), ("127.0.0.1", "localhost")]
)
def test_localhost_and_127_0_0_1_are_different_origins(
    origin: FaultServer, tmp_path: Path, hub_host: str, cdn_host: str
) -> None:
    """Same socket, same port, another host name: another origin (as in curl)."""
    data = blob(3 * MIB)
    origin.add("/blob", data)
    origin.add("/resolve/f", b"", Faults(redirect_to=f"http://{cdn_host}:{origin.port}/blob"))
    url = f"http://{hub_host}:{origin.port}/resolve/f"
    _core.download(url, tmp_path / "f", sha256=sha(data), headers=CREDENTIALS, chunk_size=CHUNK)
    assert (tmp_path / "f").read_bytes() == data
    by_host: dict[str, list[Request]] = {hub_host: [], cdn_host: []}
    for q in origin.requests:
        by_host[q.headers["host"].rsplit(":", 1)[0]].append(q)
    assert_authenticated(by_host[hub_host])
    assert_clean(by_host[cdn_host], at_least=len(data) // CHUNK)


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(status_seq=[500, 503, 429], retry_after="0"), id="retries"),
        pytest.param(Faults(drop_at=100_000, drop_times=3), id="dropped-ranges"),
        # Range ignored: the plain path; the cut makes it send a GET of its own.
        pytest.param(Faults(ignore_range=True, drop_at=500_000), id="plain-fallback"),
        pytest.param(Faults(bad_content_range=True), id="bad-range-restart"),
        pytest.param(Faults(etag_change=True), id="etag-restart"),
    ],
)
def test_retries_restarts_and_plain_path_carry_no_credentials(
    origin: FaultServer, cdn: FaultServer, tmp_path: Path, faults: Faults
) -> None:
    data = blob(2 * MIB)
    url = redirected(origin, cdn, data, faults)
    _core.download(
        url,
        tmp_path / "f",
        sha256=sha(data),
        headers=CREDENTIALS,
        chunk_size=CHUNK,
        connections=2,
    )
    assert (tmp_path / "f").read_bytes() == data
    assert_clean(cdn.requests, at_least=2)
    assert_authenticated(origin.requests)


def test_resume_after_cancel_carries_no_credentials(
    origin: FaultServer, cdn: FaultServer, tmp_path: Path
) -> None:
    data = blob(8 * MIB)
    # Slow, so that the cancel lands mid-transfer.
    url = redirected(origin, cdn, data, Faults(slow_bps=MIB))
    dest = tmp_path / "f"
    got = 0

    def stop_after_a_mib(n: int) -> None:
        nonlocal got
        got += n
        if got >= MIB:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        _core.download(url, dest, headers=CREDENTIALS, chunk_size=CHUNK, progress=stop_after_a_mib)
    assert not dest.exists()
    assert any(n.endswith(".part.state") for n in leftovers(tmp_path))
    first_run = len(cdn.requests)
    cdn.faults("/blob").slow_bps = None
    r = _core.download(url, dest, sha256=sha(data), headers=CREDENTIALS, chunk_size=CHUNK)
    assert dest.read_bytes() == data
    assert r.resumed_bytes > 0
    resumed = cdn.requests[first_run:]
    # The resumed run's ranges start past what the first run kept.
    assert resumed and all(q.range is not None for q in resumed)
    assert_clean(cdn.requests, at_least=first_run + 1)
    assert_authenticated(origin.requests)
    assert len(origin.requests) >= 2  # one per run


def test_download_many_carries_no_credentials_to_the_redirect_target(
    origin: FaultServer, cdn: FaultServer, tmp_path: Path
) -> None:
    files = {f"/f{i}": blob(MIB + i * 4096, seed=i) for i in range(4)}
    items: list[_core.DownloadItem] = []
    for i, (p, d) in enumerate(files.items()):
        cdn_url = cdn.add(f"/blob{p}", d)
        item: _core.DownloadItem = {
            "url": origin.add(f"/resolve{p}", b"", Faults(redirect_to=cdn_url)),
            "dest": tmp_path / p[1:],
            "sha256": sha(d),
        }
        if i % 2:
            # Per-item headers replace the shared ones: the same rule applies.
            item["headers"] = CREDENTIALS
        items.append(item)
    rs = _core.download_many(
        items, max_concurrent=2, connections=4, headers=CREDENTIALS, chunk_size=CHUNK
    )
    assert [r.sha256 for r in rs] == [sha(d) for d in files.values()]
    assert_clean(cdn.requests, at_least=sum(len(d) // CHUNK for d in files.values()))
    assert_authenticated(origin.requests)
    assert len(origin.requests) >= len(files)
