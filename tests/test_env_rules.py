"""The environment is read in config.py, by one rule per variable. Before,
four modules read ``HF_ENDPOINT``/``HF_TOKEN`` and disagreed on a blank value
(config.py took ``"  "`` as an endpoint and failed; the Hub client and the endpoint
list took it as unset), and the Hub client read ``HF_HUB_OFFLINE`` by a rule of its
own (a misspelt value was silently "online" there and an error in the config)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import caxton_models
from caxton_models.acquire._endpoints import default_endpoints
from caxton_models.acquire.hub import HF_HUB, HubClient
from caxton_models.config import parse_config
from caxton_models.errors import ConfigError

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


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "CAXTON_OFFLINE"])
@pytest.mark.parametrize(
    ("value", "offline"),
    [("1", True), (" ON ", True), ("yes", True), ("0", False), ("off", False), ("", False)],
)
def test_offline_is_one_rule(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, offline: bool
) -> None:
    for v in ("HF_HUB_OFFLINE", "CAXTON_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, value)
    assert parse_config({}, environ=True).offline is offline
    assert HubClient().offline is offline


def test_a_misspelt_offline_flag_is_an_error_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "ture")
    for build in (lambda: parse_config({}, environ=True), HubClient):
        with pytest.raises(ConfigError, match="HF_HUB_OFFLINE='ture' is not a boolean"):
            build()


#: Read where they act, not in config.py: the store reads no configuration (an
#: import-linter contract), and metrics sits beside config in the lowest layer.
#: Each is a switch for tests or for turning an exporter off, not a setting.
ENV_READS_OUTSIDE_CONFIG = {
    "store/_lock.py": "CAXTON_NO_LOCKS",
    "store/_revisions.py": "CAXTON_NO_RENAME_EXCHANGE",
    "metrics.py": "CAXTON_PROMETHEUS",
}


def test_the_environment_is_read_in_config_only() -> None:
    read = re.compile(r"(?:os\.environ|os\.getenv)\b")
    names = re.compile(r"(?:environ\.get\(|environ\[|getenv\()\s*[\"']([A-Z_0-9]+)")
    outside = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = str(p.relative_to(PACKAGE))
        text = p.read_text(encoding="utf-8")
        if rel != "config.py" and read.search(text):
            outside[rel] = ",".join(sorted(set(names.findall(text))))
    assert outside == ENV_READS_OUTSIDE_CONFIG
