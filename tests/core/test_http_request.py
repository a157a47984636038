"""`_core.http_request`: the hub client's HTTP primitive."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from caxton_models import _core
from caxton_models.errors import NetworkError, ServerError
from tests.support.faultserver import Faults, FaultServer


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def test_get_returns_status_headers_body(srv: FaultServer) -> None:
    url = srv.add("/api", b'{"sha": "abc"}', Faults(extra_headers={"X-Repo-Commit": "c0ffee"}))
    r = _core.http_request("GET", url)
    assert r.status == 200
    assert r.body == b'{"sha": "abc"}'
    assert r.headers["x-repo-commit"] == "c0ffee"
    assert r.url == url
    assert srv.requests[0].headers["accept-encoding"] == "identity"


def test_4xx_is_returned_not_raised(srv: FaultServer) -> None:
    r = _core.http_request("GET", srv.url("/missing"))
    assert r.status == 404
    assert r.headers["x-error-code"] == "EntryNotFound"


def test_head_without_following_redirects(srv: FaultServer) -> None:
    srv.add("/resolve", b"", Faults(redirect_to="http://cdn.invalid/blob"))
    r = _core.http_request("HEAD", srv.url("/resolve"), follow_redirects=False)
    assert r.status == 302
    assert r.headers["location"] == "http://cdn.invalid/blob"
    assert r.body == b""


def test_transient_errors_retried(srv: FaultServer) -> None:
    url = srv.add("/api", b"ok", Faults(status_seq=[500, 429]))
    r = _core.http_request("GET", url, retries=3)
    assert (r.status, r.body) == (200, b"ok")
    assert srv.gets("/api") == 3


def test_retries_exhausted(srv: FaultServer) -> None:
    url = srv.add("/api", b"ok", Faults(status_always=502))
    with pytest.raises(ServerError) as ei:
        _core.http_request("GET", url, retries=1)
    assert ei.value.status == 502
    assert srv.gets("/api") == 2


def test_connection_refused() -> None:
    with FaultServer() as s:
        url = s.url("/x")
    with pytest.raises(NetworkError):
        _core.http_request("GET", url, retries=0)


def test_max_bytes(srv: FaultServer) -> None:
    url = srv.add("/big", b"x" * 5000)
    with pytest.raises(NetworkError, match="max_bytes"):
        _core.http_request("GET", url, max_bytes=1000)


def test_authorization_dropped_on_cross_origin_redirect() -> None:
    token = "hf_SENTINEL_http_token"
    with FaultServer() as hub, FaultServer() as cdn:
        target = cdn.add("/x", b"payload")
        url = hub.add("/x", b"", Faults(redirect_to=target))
        r = _core.http_request("GET", url, headers={"Authorization": f"Bearer {token}"})
        assert r.body == b"payload" and r.url == target
        assert hub.requests[0].headers["authorization"] == f"Bearer {token}"
        assert "authorization" not in cdn.requests[0].headers


def test_same_origin_redirect_keeps_authorization(srv: FaultServer) -> None:
    srv.add("/a", b"", Faults(redirect_to="/b"))
    srv.add("/b", b"bee")
    r = _core.http_request("GET", srv.url("/a"), headers={"Authorization": "Bearer t"})
    assert r.body == b"bee"
    assert all(q.headers.get("authorization") == "Bearer t" for q in srv.requests)


def test_token_never_in_errors(srv: FaultServer) -> None:
    token = "hf_SENTINEL_err_token"
    url = srv.add("/api", b"", Faults(status_always=503))
    with pytest.raises(ServerError) as ei:
        _core.http_request(
            "GET", url + "?token=" + token, headers={"Authorization": token}, retries=0
        )
    assert token not in str(ei.value) and token not in repr(ei.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _core.http_request("GET", "file:///etc/passwd")
    with pytest.raises(ValueError):
        _core.http_request("GET", "not a url")
    with pytest.raises(ValueError):
        _core.http_request("GET", "http://127.0.0.1:1/", timeout=0)
