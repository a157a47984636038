"""``HF_ENDPOINT`` and ``HF_TOKEN`` are read in config.py only, by one rule: before,
four modules read them and disagreed on a blank value (config.py took ``"  "`` as an
endpoint and failed; the Hub client and the endpoint list took it as unset)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import caxton_models
from caxton_models.acquire._endpoints import default_endpoints
from caxton_models.acquire.hub import HF_HUB, HubClient
from caxton_models.config import parse_config

PACKAGE = Path(caxton_models.__file__).parent
MIRROR = "http://127.0.0.1:9"


def test_a_blank_endpoint_is_unset_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "   ")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = parse_config({}, environ=True)
    assert parse_config({}, environ=False).download.endpoints == cfg.download.endpoints
    assert default_endpoints() == [HF_HUB]
    assert HubClient(offline=True).endpoints == (HF_HUB,)


def test_a_set_endpoint_is_first_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f" {MIRROR}/ ")
    cfg = parse_config({}, environ=True)
    assert cfg.download.endpoints[0].rstrip("/") == MIRROR
    assert default_endpoints()[0] == MIRROR
    assert HubClient(offline=True).endpoints[0] == MIRROR


def test_the_token_is_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    assert parse_config({}, environ=True).token == "hf_abcdefghijkl"
    monkeypatch.setenv("HF_TOKEN", "")
    assert parse_config({}, environ=True).token is None


def test_only_config_reads_the_hub_variables() -> None:
    reads = re.compile(r"environ(?:\.get\(|\[)\s*[\"'](HF_ENDPOINT|HF_TOKEN)")
    found = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if reads.search(p.read_text(encoding="utf-8"))
    ]
    assert found == ["config.py"]
