"""HubClient against `caxton model serve` (and a fault proxy in front of it), on 127.0.0.1.

Every error case of issue 4: gated, missing repo / revision / file, offline, bad mirrors
(wrong bytes, dead, lacking the repo), retries honouring Retry-After, token hygiene.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from caxton_models import _core
from caxton_models.acquire.hub import HubClient, RepoFile, RepoInfo, default_endpoints, redact_url
from caxton_models.errors import (
    AccessDenied,
    ChecksumMismatch,
    DownloadError,
    InvalidPath,
    ModelNotFound,
    OfflineError,
    ServerError,
)
from caxton_models.ops.server import Catalog, ServeOptions, ServerThread
from tests.support.hubfaults import (
    MINILM_COMMIT,
    MINILM_REPO_ID,
    Fault,
    FaultProxy,
    minilm_catalog,
    minilm_sha256s,
)

TINY = "acme/tiny"
SENTINEL = "hf_SENTINELtoken0123456789abcdefXYZ"
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "sub").mkdir()
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "sub" / "tokenizer.json").write_bytes(os.urandom(20_000))
    (root / "model.safetensors").write_bytes(os.urandom(300_000))
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    return root


@pytest.fixture(scope="module")
def tiny_catalog(tiny_dir: Path) -> Catalog:
    return Catalog.from_folder(tiny_dir, TINY)


@pytest.fixture(scope="module")
def tiny_server(tiny_catalog: Catalog) -> Iterator[ServerThread]:
    opts = ServeOptions(gated=frozenset(), tokens=frozenset({SENTINEL}))
    with ServerThread(tiny_catalog, options=opts) as srv:
        yield srv


def _field(err: BaseException, name: str) -> object:
    """The typed fields errors carry (set by CaxtonError.__init__)."""
    return getattr(err, name)


def _sha(path: Path) -> str:
    return _core.sha256_file(path)


# -- the real model, end to end ----------------------------------------------------------------


def test_resolve_and_download_real_minilm(minilm_dir: Path, tmp_path: Path) -> None:
    sums = minilm_sha256s(minilm_dir)
    with ServerThread(minilm_catalog(minilm_dir), lfs_redirect=True) as srv:
        client = HubClient([srv.url])
        for rev in ("main", MINILM_COMMIT):
            info = client.resolve(MINILM_REPO_ID, rev)
            assert info.commit == MINILM_COMMIT and info.endpoint == srv.url
        assert sorted(f.path for f in info.files) == sorted(sums)
        st = info.file("model.safetensors")
        assert st.lfs and st.sha256 == sums["model.safetensors"]
        assert st.size == (minilm_dir / "model.safetensors").stat().st_size
        cfg = info.file("config.json")
        assert not cfg.lfs and cfg.sha256 is None
        assert cfg.git_oid == _core.git_blob_sha1_file(minilm_dir / "config.json")
        for f in info.files:
            dest = tmp_path / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(info, f.path, dest)
            assert _sha(dest) == sums[f.path], f.path
        meta = client.file_metadata(MINILM_REPO_ID, "main", "model.safetensors")
        assert meta.commit == MINILM_COMMIT and meta.etag == sums["model.safetensors"]
        assert meta.size == st.size and meta.location.startswith(str(srv.lfs_url))


# -- each error case has its own error -----------------------------------------------------------


def test_missing_repo_revision_and_file(tiny_server: ServerThread, tmp_path: Path) -> None:
    client = HubClient([tiny_server.url], retries=1)
    with pytest.raises(ModelNotFound) as e:
        client.resolve("nobody/nothing")
    assert _field(e.value, "kind") == "repo" and "nobody/nothing" in str(e.value)
    with pytest.raises(ModelNotFound) as e:
        client.resolve(TINY, "v99")
    assert _field(e.value, "kind") == "revision" and "v99" in str(e.value)
    with pytest.raises(ModelNotFound) as e:
        client.resolve(TINY, "f" * 40)
    assert _field(e.value, "kind") == "revision"
    info = client.resolve(TINY)
    with pytest.raises(ModelNotFound) as e:
        info.file("nope.bin")
    assert _field(e.value, "kind") == "file"
    # A manifest naming a file the server lacks: the server's EntryNotFound says so.
    ghost = RepoFile("ghost.bin", 10, "0" * 64, None, True)
    bad = RepoInfo(info.repo_id, info.revision, info.commit, (*info.files, ghost), info.endpoint)
    with pytest.raises(ModelNotFound) as e:
        client.download_file(bad, "ghost.bin", tmp_path / "ghost.bin")
    assert _field(e.value, "kind") == "file" and "ghost.bin" in str(e.value)
    assert not (tmp_path / "ghost.bin").exists()
    with pytest.raises(ModelNotFound) as e:
        client.file_metadata(TINY, "main", "ghost.bin")
    assert _field(e.value, "kind") == "file"


def test_gated_repo(tiny_catalog: Catalog, tiny_dir: Path, tmp_path: Path) -> None:
    opts = ServeOptions(gated=frozenset({TINY}), tokens=frozenset({SENTINEL}))
    with ServerThread(tiny_catalog, options=opts) as srv:
        info = HubClient([srv.url]).resolve(TINY)  # metadata is public, as on the Hub
        with pytest.raises(AccessDenied) as e:
            HubClient([srv.url]).download_file(info, "config.json", tmp_path / "a")
        assert (
            _field(e.value, "gated")
            and _field(e.value, "status") == 401
            and "HF_TOKEN" in str(e.value)
        )
        with pytest.raises(AccessDenied) as e:
            HubClient([srv.url], token="hf_wrong").download_file(
                info, "config.json", tmp_path / "b"
            )
        assert _field(e.value, "gated") and _field(e.value, "status") == 403
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
        ok = HubClient([srv.url], token=SENTINEL)
        ok.download_file(info, "model.safetensors", tmp_path / "c")
        assert _sha(tmp_path / "c") == _sha(tiny_dir / "model.safetensors")


def test_offline_makes_no_request(tiny_server: ServerThread, tmp_path: Path, monkeypatch) -> None:
    with FaultProxy(tiny_server.url) as proxy:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        client = HubClient([proxy.url])
        with pytest.raises(OfflineError):
            client.resolve(TINY)
        info = HubClient([proxy.url], offline=False).resolve(TINY)
        n = len(proxy.requests)
        with pytest.raises(OfflineError):
            client.download_file(info, "config.json", tmp_path / "x")
        assert len(proxy.requests) == n


def test_invalid_ids_are_refused_before_any_request(tiny_server: ServerThread) -> None:
    client = HubClient([tiny_server.url])
    for repo in ("../etc", "a/b/c", "", "a/../b"):
        with pytest.raises(ValueError):
            client.resolve(repo)
    for rev in ("../main", "a/../../b", "", "x\\y"):
        with pytest.raises(ValueError):
            client.resolve(TINY, rev)
    with pytest.raises(ValueError):
        HubClient(["ftp://example.com"])
    with pytest.raises(ValueError):
        HubClient(["http://user:pw@127.0.0.1:1"])


@pytest.mark.parametrize(
    "path",
    [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "a\\..\\evil",
        "C:x",
        "CON",
        "x.",
        ".caxton_metadata",
    ],
)
def test_hostile_listing_is_refused(tiny_server: ServerThread, path: str) -> None:
    entry = {"type": "file", "path": path, "size": 1, "oid": "a" * 40}
    body = json.dumps([entry]).encode()
    with (
        FaultProxy(tiny_server.url, [Fault(r"/tree/", body=body)]) as proxy,
        pytest.raises(InvalidPath),
    ):
        HubClient([proxy.url]).resolve(TINY)


def test_listing_with_bad_hashes_is_refused(tiny_server: ServerThread) -> None:
    body = b'[{"type": "file", "path": "w.bin", "size": 5, "oid": "' + b"a" * 40
    body += b'", "lfs": {"oid": "../../not-a-sha", "size": 5}}]'
    with (
        FaultProxy(tiny_server.url, [Fault(r"/tree/", body=body)]) as proxy,
        pytest.raises(ServerError, match="sha256"),
    ):
        HubClient([proxy.url]).resolve(TINY)


# -- endpoints in order, each checked against the same manifest ------------------------------------


def test_dead_or_lacking_endpoints_fall_through(
    tiny_server: ServerThread, tiny_dir: Path, tmp_path: Path
) -> None:
    empty = Catalog()
    with ServerThread(empty) as lacking:
        client = HubClient([DEAD, lacking.url, tiny_server.url], retries=1, timeout=5)
        info = client.resolve(TINY)
        assert info.endpoint == tiny_server.url
        client.download_file(info, "sub/tokenizer.json", tmp_path / "t.json")
        assert _sha(tmp_path / "t.json") == _sha(tiny_dir / "sub" / "tokenizer.json")
        # When every endpoint fails, the error names the most useful failure.
        with pytest.raises(ModelNotFound) as e:
            HubClient([DEAD, lacking.url], retries=1, timeout=5).resolve(TINY)
        assert _field(e.value, "kind") == "repo"


@pytest.mark.parametrize("name", ["model.safetensors", "sub/tokenizer.json"])
def test_a_mirror_flipping_a_byte_cannot_corrupt_the_file(
    tiny_server: ServerThread, tiny_dir: Path, tmp_path: Path, name: str
) -> None:
    """LFS files are checked by SHA-256, small ones by git blob id: the next endpoint wins."""
    info = HubClient([tiny_server.url]).resolve(TINY)
    with FaultProxy(tiny_server.url, [Fault(r"/resolve/", method="GET", flip_byte=1234)]) as bad:
        mirror_only = RepoInfo(info.repo_id, info.revision, info.commit, info.files, bad.url)
        dest = tmp_path / "out"
        with pytest.raises(ChecksumMismatch) as e:
            HubClient([bad.url], retries=1).download_file(mirror_only, name, dest)
        assert not dest.exists()
        assert e.value.expected != e.value.actual
        HubClient([bad.url, tiny_server.url], retries=1).download_file(mirror_only, name, dest)
        assert _sha(dest) == _sha(tiny_dir / name)


def test_zeros_or_html_from_a_mirror(
    tiny_server: ServerThread, tiny_dir: Path, tmp_path: Path
) -> None:
    info = HubClient([tiny_server.url]).resolve(TINY)
    for fault in (Fault(r"/resolve/", method="GET", zeros=True),):
        with FaultProxy(tiny_server.url, [fault]) as bad:
            mirror = RepoInfo(info.repo_id, info.revision, info.commit, info.files, bad.url)
            with pytest.raises(ChecksumMismatch):
                HubClient([bad.url], retries=1).download_file(
                    mirror, "model.safetensors", tmp_path / "z"
                )
            assert not (tmp_path / "z").exists()


# -- retries ------------------------------------------------------------------------------------


def test_5xx_then_success_is_retried(tiny_server: ServerThread) -> None:
    with FaultProxy(tiny_server.url, [Fault(r"/revision/", status_seq=[503, 500])]) as proxy:
        info = HubClient([proxy.url], retries=3).resolve(TINY)
        assert info.commit
        assert len(proxy.seen(r"/revision/")) == 3


def test_429_honours_retry_after(tiny_server: ServerThread) -> None:
    with FaultProxy(
        tiny_server.url, [Fault(r"/revision/", status_seq=[429], retry_after="1")]
    ) as proxy:
        HubClient([proxy.url], retries=3).resolve(TINY)
        first, second = proxy.seen(r"/revision/")
        # A lower bound only: waiting less than Retry-After would be a bug on any machine.
        assert second.at - first.at >= 0.9


def test_persistent_5xx_gives_server_error(tiny_server: ServerThread) -> None:
    with FaultProxy(tiny_server.url, [Fault(r"/revision/", status_seq=[502] * 10)]) as proxy:
        with pytest.raises(ServerError) as e:
            HubClient([proxy.url], retries=2).resolve(TINY)
        assert _field(e.value, "status") == 502


def test_drop_mid_file_resumes(tiny_server: ServerThread, tiny_dir: Path, tmp_path: Path) -> None:
    info = HubClient([tiny_server.url]).resolve(TINY)
    with FaultProxy(
        tiny_server.url, [Fault(r"safetensors", method="GET", drop_at=150_000, times=1)]
    ) as p:
        client = HubClient([p.url], retries=3)
        via_proxy = RepoInfo(info.repo_id, info.revision, info.commit, info.files, p.url)
        client.download_file(via_proxy, "model.safetensors", tmp_path / "m")
        assert _sha(tmp_path / "m") == _sha(tiny_dir / "model.safetensors")
        assert len(p.seen(r"safetensors", "GET")) >= 2


TRANSFER_FAULTS = {
    "drop": [Fault(r"safetensors", method="GET", drop_at=150_000, times=1)],
    "drop-then-ignore-range": [
        Fault(r"safetensors", method="GET", drop_at=150_000, times=1),
        Fault(r"safetensors", method="GET", ignore_range=True),
    ],
    "content-length-too-long": [Fault(r"safetensors", method="GET", content_length=10, times=1)],
    "content-length-too-short": [Fault(r"safetensors", method="GET", content_length=-10, times=1)],
    "content-length-junk": [Fault(r"safetensors", method="GET", content_length="junk", times=1)],
    "content-length-missing": [Fault(r"safetensors", method="GET", content_length="none", times=1)],
    "stall": [Fault(r"safetensors", method="GET", stall_after=1000, stall_seconds=4, times=1)],
}


@pytest.mark.parametrize("fault", sorted(TRANSFER_FAULTS))
def test_transfer_faults_never_corrupt(
    tiny_server: ServerThread, tiny_dir: Path, tmp_path: Path, fault: str
) -> None:
    """One endpoint: the right bytes or a typed DownloadError and no file. Two: the right bytes."""
    info = HubClient([tiny_server.url]).resolve(TINY)
    want = _sha(tiny_dir / "model.safetensors")
    faults = [Fault(**vars(f)) for f in TRANSFER_FAULTS[fault]]
    with FaultProxy(tiny_server.url, faults) as bad:
        via_bad = RepoInfo(info.repo_id, info.revision, info.commit, info.files, bad.url)
        dest = tmp_path / "one"
        try:
            HubClient([bad.url], retries=3, timeout=2).download_file(
                via_bad, "model.safetensors", dest
            )
            assert _sha(dest) == want
        except DownloadError:
            assert not dest.exists()
    faults = [Fault(**vars(f)) for f in TRANSFER_FAULTS[fault]]
    with FaultProxy(tiny_server.url, faults) as bad:
        via_bad = RepoInfo(info.repo_id, info.revision, info.commit, info.files, bad.url)
        dest = tmp_path / "two"
        HubClient([bad.url, tiny_server.url], retries=3, timeout=2).download_file(
            via_bad, "model.safetensors", dest
        )
        assert _sha(dest) == want


# -- the token -----------------------------------------------------------------------------------


def test_token_goes_only_to_the_trusted_host_and_never_shows(
    tiny_server: ServerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    with (
        FaultProxy(tiny_server.url, host="localhost") as cdn,
        FaultProxy(
            tiny_server.url, [Fault(r"safetensors", method="GET", redirect_to=cdn.url)]
        ) as primary,
        FaultProxy(tiny_server.url) as mirror,
    ):
        client = HubClient([primary.url, mirror.url])
        assert client.authenticated
        info = client.resolve(TINY)
        client.download_file(info, "model.safetensors", tmp_path / "m")
        # Sent to the configured endpoint...
        assert all(r.headers.get("authorization") == f"Bearer {SENTINEL}" for r in primary.requests)
        # ...never across the redirect to another host.
        assert cdn.requests and all("authorization" not in r.headers for r in cdn.requests)
        # A mirror later in the list is not trusted with it either.
        mirror_client = HubClient([primary.url, mirror.url])
        mirror_info = RepoInfo(info.repo_id, info.revision, info.commit, info.files, mirror.url)
        mirror_client.download_file(mirror_info, "config.json", tmp_path / "c")
        assert mirror.requests and all("authorization" not in r.headers for r in mirror.requests)

        shown = [repr(client), str(client), repr(client._token), repr(info)]
        # An error about a refused token must not show it either.
        gated = ServeOptions(gated=frozenset({TINY}), tokens=frozenset({"another"}))
        with (
            ServerThread(tiny_server.catalog, options=gated) as g,
            pytest.raises(AccessDenied) as e,
        ):
            g_info = RepoInfo(info.repo_id, info.revision, info.commit, info.files, g.url)
            HubClient([g.url], token=SENTINEL).download_file(g_info, "config.json", tmp_path / "g")
        shown += [str(e.value), repr(e.value), "".join(traceback.format_exception(e.value))]
        shown += [r.getMessage() for r in caplog.records]
        assert "<TOKEN>" in repr(client)
        for text in shown:
            assert SENTINEL not in text
        with pytest.raises(TypeError):
            pickle.dumps(client._token)


def test_no_token_over_plain_http_to_another_machine() -> None:
    client = HubClient(["http://mirror.example:8080"], token=SENTINEL)
    assert "Authorization" not in client._headers("http://mirror.example:8080/api/models/a/b")
    opted = HubClient(["http://mirror.example:8080"], token=SENTINEL, allow_http_token=True)
    assert "Authorization" in opted._headers("http://mirror.example:8080/api/models/a/b")
    assert "Authorization" in client._headers("https://huggingface.co/api/models/a/b")
    assert "Authorization" not in client._headers("https://evil.example/api/models/a/b")


def test_default_endpoint_order(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    got = default_endpoints(["https://mirror.example", "http://127.0.0.1:1234"])
    assert got == ["http://127.0.0.1:1234", "https://mirror.example", "https://huggingface.co"]
    assert default_endpoints(include_hub=False) == ["http://127.0.0.1:1234"]
    assert HubClient().endpoints == ("http://127.0.0.1:1234",)
    monkeypatch.delenv("HF_ENDPOINT")
    assert HubClient().endpoints == ("https://huggingface.co",)


def test_redact_url() -> None:
    url = "https://user:pw@cdn.example/x?X-Amz-Signature=abc&token=def&part=3"
    out = redact_url(url)
    assert "pw" not in out and "abc" not in out and "def" not in out and "part=3" in out
