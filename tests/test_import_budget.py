"""What start-up may import: the modules that only a graph build, an int8
quantization, a download or an integration needs must stay out of
``import caxton_models`` and out of ``load()`` of a model that ships its ONNX
export. ``onnx`` alone (through ``ml_dtypes``) once cost about 0.8 s of every
first vector. No timing here: the list of imported modules is the budget
(``python -X importtime``); the first-vector gate in benches/ measures time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Needed only to build a graph from safetensors, quantize, optimise offline,
#: download, serve, or plug into a framework.
GRAPH_BUILD = (
    "onnx",
    "ml_dtypes",
    "onnxruntime.quantization",
    "onnxruntime.transformers",
    "caxton_models.runtime.graph.encoder",
    "caxton_models.runtime.graph.head",
    "caxton_models.runtime.graph.session",
    "caxton_models.runtime.graph._builder",
)
ELSEWHERE = (
    "aiohttp",
    "huggingface_hub",
    "ray",
    "prometheus_client",
    "yaml",  # no caxton.yaml in these runs: no parser
    "caxton_models.acquire.hub",
    "caxton_models.ops",
)
#: The cache's write side (publish, revisions, eviction, recovery, a mirror's
#: records): a load that finds its files reads a few records and nothing else.
#: ``_revisions`` once ran ``ldconfig -p`` in a subprocess at import.
CACHE_WRITES = tuple(
    f"caxton_models.store.{m}"
    for m in (
        "_cache",
        "_cache_revisions",
        "_revisions",
        "_evict",
        "_finalize",
        "_recovery",
        "_upstream",
    )
)


def imported_modules(code: str, env: dict[str, str]) -> set[str]:
    """Every module ``code`` imports in a fresh interpreter, read from
    ``-X importtime`` (which lists each module once, when it is first loaded)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["HOME"],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    assert "caxton_models" in names, "importtime listed nothing: the probe is broken"
    return names


def offending(names: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CAXTON_", "HF_"))}
    return {
        **keep,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "CAXTON_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "python"), str(REPO)]),
    }


def test_import_caxton_models_loads_only_the_base(clean_env: dict[str, str]) -> None:
    names = imported_modules("import caxton_models", clean_env)
    assert offending(names, GRAPH_BUILD + ELSEWHERE) == []
    # Not even the runtime: a CLI's --help or an error class costs nothing.
    assert offending(names, ("numpy", "onnxruntime", "tokenizers", "caxton_models.runtime")) == []


def test_load_of_the_bundled_model_builds_nothing(clean_env: dict[str, str]) -> None:
    names = imported_modules(
        """
        import caxton_models
        m = caxton_models.load("bundled-mini")
        assert m.embed(["Hello world"]).shape == (1, m.dimensions)
        """,
        clean_env,
    )
    assert offending(names, GRAPH_BUILD + ELSEWHERE + CACHE_WRITES) == []
    assert "onnxruntime" in names  # the probe did run a model


def test_load_of_a_folder_with_an_onnx_export_builds_nothing(
    clean_env: dict[str, str], minilm_dir: Path, tmp_path: Path
) -> None:
    """The real MiniLM (ships onnx/model.onnx), its optimised graph already in
    the graph cache: the second process imports none of the builders."""
    code = f"""
        import caxton_models
        m = caxton_models.load({str(minilm_dir)!r})
        assert m.embed(["Hello world"]).shape == (1, 384)
        """
    imported_modules(code, clean_env)  # the first load optimises and caches the graph
    names = imported_modules(code, clean_env)
    assert offending(names, GRAPH_BUILD + ELSEWHERE + CACHE_WRITES) == []


def test_the_probe_sees_a_builder_when_one_is_needed(
    clean_env: dict[str, str], shared_dir: Path
) -> None:
    """The budget is not vacuous: a safetensors-only folder does import the
    graph builder (and so onnx) on its first load."""
    folder = shared_dir / "fixtures" / "architectures" / "st-bert-mean-normalize"
    if not folder.is_dir():
        pytest.skip(f"fixture {folder} not found")
    names = imported_modules(
        f"""
        import caxton_models
        caxton_models.load({str(folder)!r}).embed(["Hello world"])
        """,
        clean_env,
    )
    assert "caxton_models.runtime.graph._builder" in names
    assert "onnx" in names
