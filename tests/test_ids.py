"""One rule for hashes, commits, repository ids and revisions (caxton_models._ids), and
every place that checks one of them agreeing with it: before, seven homes of the hex
rule, five repo-id regexes and four revision rules disagreed at the edges, and two
``^...$`` patterns used with ``re.match`` let a trailing newline through."""

from __future__ import annotations

import pytest

from caxton_models import _ids
from caxton_models._paths import check_name
from caxton_models.acquire._adhoc import is_repo_id as names_a_repo
from caxton_models.acquire.hub import HubClient
from caxton_models.errors import InvalidPath
from caxton_models.ops.server.catalog import Catalog, CatalogError
from caxton_models.registry import ModelSpec, ModelType
from caxton_models.store._upstream import UpstreamRecords

COMMIT = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
SHA = "ab" * 32
LONG_PART = "a" * 97

REPO_IDS_OK = ["org/name", "name", "sentence-transformers/all-MiniLM-L6-v2", "a" * 96 + "/b"]
REPO_IDS_BAD = [
    "org/name\n",
    "org/name/extra",
    "org/../x",
    "-org/name",
    "org/" + LONG_PART,
    "",
    "org/na me",
]
REVISIONS_OK = ["main", "v1.0", "refs/pr/1", COMMIT, "release_2024-01"]
REVISIONS_BAD = ["main\n", "", "-x", "a/../b", "a//b", "/main", "a b", "x" * 256, "v1~1", "v1:x"]


@pytest.mark.parametrize("value", [COMMIT, SHA])
def test_hex_accepts_lower_case_digests(value: str) -> None:
    assert _ids.is_hex(value, len(value))


BAD_COMMITS = [COMMIT + "\n", COMMIT.upper(), COMMIT[:-1], 40, None, " " + COMMIT]


@pytest.mark.parametrize("bad", BAD_COMMITS)
def test_commit_refuses_anything_else(bad: object) -> None:
    assert not _ids.is_commit(bad)
    assert not (isinstance(bad, str) and _ids.COMMIT.fullmatch(bad))


def test_sha256_refuses_a_trailing_newline() -> None:
    assert _ids.is_sha256(SHA)
    assert not _ids.is_sha256(SHA + "\n")


@pytest.mark.parametrize("value", REPO_IDS_OK)
def test_repo_ids_every_checker_accepts(value: str) -> None:
    assert _ids.is_repo_id(value)
    assert _ids.check_repo_id(value) == value
    assert UpstreamRecords("/nonexistent")._file(value).name.endswith(".json")


@pytest.mark.parametrize("value", REPO_IDS_BAD)
def test_repo_ids_every_checker_refuses(value: str) -> None:
    """The registry, the Hub client, the ad-hoc resolver, the upstream records and the
    mirror's catalog all say no to the same ids (the catalog had no length limit; the
    registry and the ad-hoc resolver took a trailing newline)."""
    assert not _ids.is_repo_id(value)
    with pytest.raises(ValueError, match="not a valid model id"):
        _ids.check_repo_id(value)
    with pytest.raises(ValueError, match="model_id"):
        ModelSpec("x", value, ModelType.ONNX, "bert", 1, 8, 1)
    assert not names_a_repo(value)
    with pytest.raises(ValueError):
        UpstreamRecords("/nonexistent")._file(value)
    with pytest.raises(CatalogError):
        Catalog().pin_ref(value, "main", COMMIT)


def test_a_bare_name_is_a_registry_name_not_an_ad_hoc_repo() -> None:
    assert _ids.is_repo_id("name")
    assert not names_a_repo("name")
    assert names_a_repo("org/name")


@pytest.mark.parametrize("value", REVISIONS_OK)
def test_revisions_every_checker_accepts(value: str) -> None:
    assert _ids.check_revision(value) == value
    assert ModelSpec("x", "org/x", ModelType.ONNX, "bert", 1, 8, 1, revision=value).revision


@pytest.mark.parametrize("value", REVISIONS_BAD)
def test_revisions_every_checker_refuses(value: str) -> None:
    assert not _ids.is_revision(value)
    with pytest.raises(ValueError, match="not a valid revision"):
        _ids.check_revision(value)
    with pytest.raises(ValueError, match="revision"):
        ModelSpec("x", "org/x", ModelType.ONNX, "bert", 1, 8, 1, revision=value)
    with pytest.raises(CatalogError):
        Catalog().pin_ref("org/x", value, COMMIT)


def test_the_hub_client_checks_revisions_before_any_request() -> None:
    hub = HubClient(["http://127.0.0.1:9"], offline=True)
    with pytest.raises(ValueError, match="not a valid revision"):
        hub.resolve("org/x", "main\n")


def test_a_commit_with_a_newline_is_not_a_pin() -> None:
    """``^[0-9a-f]{40}$`` with ``re.match`` took ``COMMIT + "\\n"`` as a pinned commit."""
    assert ModelSpec("x", "org/x", ModelType.ONNX, "bert", 1, 8, 1, revision=COMMIT).pinned
    with pytest.raises(ValueError, match="revision"):
        ModelSpec("x", "org/x", ModelType.ONNX, "bert", 1, 8, 1, revision=COMMIT + "\n")


def test_a_registry_name_with_a_newline_is_refused() -> None:
    check_name("all-MiniLM-L6-v2")
    with pytest.raises(InvalidPath):
        check_name("all-MiniLM-L6-v2\n")
