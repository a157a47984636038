"""An explicit configuration reaches every path it governs: ``load(config=...)``
and ``caxton --config FILE`` use its ``memory.loaded_models``, not the
caxton.yaml found on disk, and ``caxton model install`` into a full cache
keeps a model pinned only in the config's ``pinned_models``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import caxton_models
from caxton_models._load import loaded_models
from caxton_models.config import load_config
from caxton_models.store import ModelCache

TINY = "st-bert-mean-normalize"


def caxton(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caxton_models", *args],
        capture_output=True, text=True, cwd=cwd, env=dict(os.environ), timeout=300, check=False,
    )  # fmt: skip


def test_load_with_a_config_uses_its_loaded_model_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, architectures_dir: Path
) -> None:
    found = tmp_path / "found.yaml"  # what caxton.yaml discovery would give
    found.write_text("memory: {loaded_models: {max_loaded_models: 3}}\n")
    monkeypatch.setenv("CAXTON_CONFIG", str(found))
    given = tmp_path / "given.yaml"
    given.write_text(
        f"memory: {{model_cache: {{directory: {tmp_path / 'cache'}}}, "
        "loaded_models: {max_loaded_models: 1, idle_unload: 10m}}\n"
    )
    cfg = load_config(given)
    a = Path(shutil.copytree(architectures_dir / TINY, tmp_path / "a"))
    b = Path(shutil.copytree(architectures_dir / TINY, tmp_path / "b"))
    first = caxton_models.load(a, config=cfg, optimize=False)
    caxton_models.load(b, config=cfg, optimize=False)
    # The explicit limit of one model held: a was dropped, so it loads again.
    assert caxton_models.load(a, config=cfg, optimize=False) is not first
    manager = loaded_models(cfg)
    assert (manager.max_loaded_models, manager.idle_unload_s) == (1, 600.0)
    assert len(manager.loaded()) == 1 and manager.evictions
    assert loaded_models().max_loaded_models == 3  # the discovered file still governs load()


def test_cli_config_flag_governs_the_loaded_models(tmp_path: Path, architectures_dir: Path) -> None:
    # A caxton.yaml in the working directory that --config must override.
    (tmp_path / "caxton.yaml").write_text(
        "memory: {loaded_models: {preload_models: [preload-from-the-found-file]}}\n"
    )
    flag = tmp_path / "flag.yaml"
    flag.write_text(
        f"memory: {{model_cache: {{directory: {tmp_path / 'cache'}}}, "
        "loaded_models: {preload_models: [preload-from-the-flag]}}\n"
    )
    model = str(architectures_dir / TINY)
    proc = caxton("--config", str(flag), "embed", "--model", model, "hi", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"index": 0' in proc.stdout
    assert "preloading preload-from-the-flag failed" in proc.stderr
    assert "preload-from-the-found-file" not in proc.stderr


def test_cli_install_into_a_full_cache_keeps_a_model_pinned_in_the_config(
    tmp_path: Path, architectures_dir: Path
) -> None:
    cache = tmp_path / "cache"
    models = "".join(
        f"  {n}: {{model_id: org/{n}, dimensions: 32, model_type: safetensors}}\n" for n in "ab"
    )
    before = tmp_path / "before.yaml"
    before.write_text(f"memory: {{model_cache: {{directory: {cache}, max_models: 1}}}}\n"
                      f"models:\n{models}")  # fmt: skip
    src = str(architectures_dir / TINY)
    proc = caxton("--config", str(before), "model", "install", "--model-id", "a", "--source", src,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The operator pins "a" in the config (not in its metadata), then installs "b".
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(
        f"memory: {{model_cache: {{directory: {cache}, max_models: 1, pinned_models: [a]}}}}\n"
        f"models:\n{models}"
    )
    proc = caxton("--config", str(pinned), "model", "install", "--model-id", "b", "--source", src,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "CacheFull" in proc.stderr and "pinned" in proc.stderr
    assert [m.name for m in ModelCache(cache).installed()] == ["a"]
