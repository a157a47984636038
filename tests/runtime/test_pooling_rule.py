"""The pooling of a folder is decided once (read_sentence_transformers). Before, the
embedder's folder reader decided it again for a folder without modules.json: it used
1_Pooling's mode but dropped its include_prompt, while the pipeline reader ignored
1_Pooling altogether and mean-pooled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from caxton_models._bundled import bundled_dir
from caxton_models.runtime._modelconfig import ModelConfig
from caxton_models.runtime.graph.pipeline import read_sentence_transformers


def _folder(tmp_path: Path, pooling: dict[str, object] | None) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(bundled_dir(), folder)
    (folder / "modules.json").unlink()
    if pooling is None:
        shutil.rmtree(folder / "1_Pooling")
    else:
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    return folder


def test_a_folder_without_modules_json_pools_as_its_1_pooling_says(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"pooling_mode": "cls", "include_prompt": False})
    pipeline = read_sentence_transformers(folder)
    config = ModelConfig.read(folder)
    assert (pipeline.pooling, pipeline.include_prompt) == ("cls", False)
    assert (config.pooling, config.include_prompt) == ("cls", False)
    assert config.normalize  # such a folder is normalised, as the runtime always did


def test_a_plain_folder_is_mean_pooled_and_normalised(tmp_path: Path) -> None:
    folder = _folder(tmp_path, None)
    assert read_sentence_transformers(folder).pooling == "mean"
    config = ModelConfig.read(folder)
    assert (config.pooling, config.normalize, config.include_prompt) == ("mean", True, True)
    assert config.dimensions == 384
