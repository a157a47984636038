"""Shape of the download API: result objects, errors, argument checking."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from caxton_models import _core, errors
from tests.support.faultserver import Faults, FaultServer


def test_download_signature_matches_the_interface() -> None:
    sig = inspect.signature(_core.download)
    assert list(sig.parameters)[:2] == ["url", "dest"]
    kw = {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert kw == {
        "size": None,
        "sha256": None,
        "headers": None,
        "connections": None,
        "chunk_size": None,
        "timeout": 30.0,
        "retries": 8,
        "progress": None,
        "retry_delay": 0.5,
        "time_limit": None,
    }


def test_results_are_frozen(tmp_path: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/f", b"abc")
        r = _core.download(url, tmp_path / "f")
        resp = _core.http_request("GET", url)
    with pytest.raises(AttributeError):
        r.sha256 = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        resp.status = 1  # type: ignore[misc]
    assert "DownloadResult(" in repr(r) and r.url == url
    assert resp.body == b"abc" and "3 bytes" in repr(resp)


def test_errors_are_the_package_classes(tmp_path: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/f", b"abc", Faults(status_always=404))
        with pytest.raises(errors.DownloadError) as ei:
            _core.download(url, tmp_path / "f")
    assert type(ei.value) is errors.ServerError
    assert isinstance(ei.value, errors.CaxtonError)
    assert "/f" in str(ei.value)  # the message names the URL


def test_signed_url_query_never_in_messages(tmp_path: Path) -> None:
    secret = "X-Amz-Signature=SENTINELSIG"
    with FaultServer() as srv:
        url = srv.add("/f", b"abc", Faults(status_always=403)) + "?" + secret
        with pytest.raises(errors.AccessDenied) as ei:
            _core.download(url, tmp_path / "f")
    assert "SENTINELSIG" not in str(ei.value)
    assert "SENTINELSIG" not in repr(ei.value)
