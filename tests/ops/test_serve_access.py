"""Issue 16, access: allow/deny lists, the bearer token (refused, never logged), TLS, the CLI."""

from __future__ import annotations

import contextlib
import http.client
import logging
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from caxton_models.ops.server import (
    AccessRules,
    ServeOptions,
    ServerThread,
    read_tokens,
    tls_context,
)
from tests.support.cli import cli_serve
from tests.support.hubfaults import (
    MINILM_COMMIT,
    MINILM_REPO_ID,
    FaultProxy,
    make_cache_entry,
    minilm_catalog,
)
from tests.support.rawhttp import request

REPO = MINILM_REPO_ID
TOKEN = "hf_team_secret_0123456789"
CLI = [sys.executable, "-m", "caxton_models"]


def test_rules() -> None:
    rules = AccessRules.build(allow=["sentence-transformers/*"], deny=["*/secret-*"])
    assert rules.repo_allowed(REPO)
    assert not rules.repo_allowed("acme/model")
    assert not rules.repo_allowed("sentence-transformers/secret-x")  # deny wins
    assert AccessRules().repo_allowed("anything/at-all") and not AccessRules().needs_token
    tok = AccessRules.build(tokens=[TOKEN, "hf_other_token"])
    assert tok.token_ok(f"Bearer {TOKEN}") and tok.token_ok("bearer hf_other_token")
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "):
        assert not tok.token_ok(bad), bad
    assert TOKEN not in repr(tok)


def test_read_tokens(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"# team\n{TOKEN}\n\nhf_second_token\n")
    assert read_tokens(f) == [TOKEN, "hf_second_token"]
    f.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no token"):
        read_tokens(f)
    f.write_text("short\n")
    with pytest.raises(ValueError, match="not tokens"):
        read_tokens(f)


def test_allow_list_refuses_before_any_upstream_call(minilm_dir: Path, tmp_path: Path) -> None:
    from caxton_models.ops.server import Catalog, Upstream

    with ServerThread(minilm_catalog(minilm_dir)) as b, FaultProxy(b.url) as at_b:
        (tmp_path / "a").mkdir()
        opts = ServeOptions(
            access=AccessRules.build(allow=["sentence-transformers/*"]),
            upstream=Upstream([at_b.url], tmp_path / "a", timeout=5.0, retries=1),
        )
        with ServerThread(Catalog.from_cache(tmp_path / "a"), options=opts) as a:
            for path in (
                "/acme/other/resolve/main/config.json",
                "/api/models/acme/other",
                "/api/models/acme/other/tree/main",
            ):
                st, h, _ = request(a.url, "GET", path)
                assert (st, h["x-error-code"]) == (403, "RepoNotAllowed"), path
            assert not at_b.requests  # nothing was asked upstream
            st, _, _ = request(a.url, "GET", f"/{REPO}/resolve/main/config.json")
            assert st == 200


def test_token_required_refused_and_never_logged(
    minilm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    opts = ServeOptions(access=AccessRules.build(tokens=[TOKEN]))
    with ServerThread(minilm_catalog(minilm_dir), options=opts) as srv:
        path = f"/{REPO}/resolve/main/config.json"
        for headers in ({}, {"Authorization": "Bearer hf_wrong"}, {"Authorization": TOKEN}):
            for method in ("GET", "HEAD"):
                st, h, body = request(srv.url, method, path, headers)
                assert st == 401, (method, headers)
                assert "bearer" in h["www-authenticate"].lower()
                assert TOKEN.encode() not in body
        st, _, _ = request(srv.url, "GET", f"/api/models/{REPO}")
        assert st == 401
        st, _, body = request(srv.url, "GET", path, {"Authorization": f"Bearer {TOKEN}"})
        assert (st, body) == (200, (minilm_dir / "config.json").read_bytes())
        st, _, _ = request(srv.url, "GET", "/health")  # the probe needs no token
        assert st == 200
    assert TOKEN not in caplog.text


def test_huggingface_hub_with_and_without_the_token(minilm_dir: Path, tmp_path: Path) -> None:
    hf = pytest.importorskip("huggingface_hub", reason="the real Hub client (test extra)")
    opts = ServeOptions(access=AccessRules.build(tokens=[TOKEN]))
    with ServerThread(minilm_catalog(minilm_dir), options=opts) as srv:
        local = hf.hf_hub_download(
            REPO, "config.json", endpoint=srv.url, token=TOKEN, cache_dir=tmp_path / "ok"
        )
        assert Path(local).read_bytes() == (minilm_dir / "config.json").read_bytes()
        # The server's own 401, not a connection error of a server that is down.
        with pytest.raises(hf.errors.HfHubHTTPError) as refused:
            hf.hf_hub_download(
                REPO, "config.json", endpoint=srv.url, token=False, cache_dir=tmp_path / "no"
            )
        assert refused.value.response.status_code == 401


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"openssl cannot make a test certificate here: {e}")
    return cert, key


def test_tls(minilm_dir: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    opts = ServeOptions(ssl=tls_context(cert, key))
    with ServerThread(minilm_catalog(minilm_dir), options=opts) as srv:
        assert srv.url.startswith("https://")
        parts = urlsplit(srv.url)
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=ctx)
        try:
            conn.request("GET", f"/{REPO}/resolve/main/onnx/model.onnx")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == (minilm_dir / "onnx" / "model.onnx").read_bytes()
        finally:
            conn.close()


def _cli(args: list[str], errlog: Path) -> contextlib.AbstractContextManager[str]:
    return cli_serve(None, errlog, *args)


def test_cli_pull_through_with_allow_and_token(minilm_dir: Path, tmp_path: Path) -> None:
    hf = pytest.importorskip("huggingface_hub", reason="the real Hub client (test extra)")
    b_cache = tmp_path / "b"
    make_cache_entry(b_cache, "all-MiniLM-L6-v2", minilm_dir, REPO, MINILM_COMMIT,
                     revision=MINILM_COMMIT, only=["config.json", "modules.json"])  # fmt: skip
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    # B holds the model at its pinned commit only: --ref names main for it.
    with _cli(["--cache", str(b_cache), "--ref", f"{REPO}@main={MINILM_COMMIT}"],
              tmp_path / "b.err") as b_url:  # fmt: skip
        a_args = ["--cache", str(tmp_path / "a"), "--upstream", b_url,
                  "--allow", "sentence-transformers/*", "--token-file", str(tokens)]  # fmt: skip
        with _cli(a_args, tmp_path / "a.err") as a_url:
            local = hf.hf_hub_download(
                REPO, "modules.json", endpoint=a_url, token=TOKEN, cache_dir=tmp_path / "hf"
            )
            assert Path(local).read_bytes() == (minilm_dir / "modules.json").read_bytes()
            st, _, _ = request(a_url, "GET", f"/{REPO}/resolve/main/modules.json",
                               {"Authorization": "Bearer hf_wrong_token"})  # fmt: skip
            assert st == 401
            st, h, _ = request(a_url, "GET", "/acme/x/resolve/main/a.json",
                               {"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            assert (st, h["x-error-code"]) == (403, "RepoNotAllowed")
    log = (tmp_path / "a.err").read_text()
    assert "/resolve/main/modules.json" in log  # the access log is on (-v) ...
    assert TOKEN not in log and "hf_wrong_token" not in log  # ... and holds no token


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tls-cert", "x.pem"], "go together"),
        (["--upstream", "ftp://x"], "--upstream"),
        (["--ref", "not-a-ref"], "--ref"),
        (["--token-file", "/nonexistent/tokens"], "--token-file"),
        (["--repos", ".", "--upstream", "http://127.0.0.1:9"], "--cache"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--max-connections", "²"], "--max-connections"),
    ],
)
def test_cli_bad_flags_are_usage_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "model", "serve", "--port", "0", *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert needle in run.stderr
