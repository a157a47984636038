"""One max-sequence-length rule (runtime/_seqlen.py) for the embedder's folder reader,
the sentence-transformers pipeline reader and the task heads. Before, a RoBERTa folder
whose sentence_bert_config.json sets no max_seq_length (and whose tokenizer says "no
limit") got 514 from the embedder (one past the position table: an index error on a long
text), 513 from the pipeline reader and 512 from the task heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from caxton_models._bundled import bundled_dir
from caxton_models.runtime._modelconfig import ModelConfig
from caxton_models.runtime._seqlen import max_sequence_length
from caxton_models.runtime._taskmodel import TaskFolder
from caxton_models.runtime.graph.pipeline import read_sentence_transformers

NO_LIMIT = 1000000000000000019884624838656  # transformers' VERY_LARGE_INTEGER


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model's files, described as a RoBERTa checkpoint that states no limit."""
    folder = tmp_path_factory.mktemp("roberta")
    shutil.copytree(bundled_dir(), folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="roberta", max_position_embeddings=514)
    config.pop("pad_token_id", None)
    _write(folder / "config.json", config)
    _write(folder / "sentence_bert_config.json", {"do_lower_case": False})
    _write(folder / "tokenizer_config.json", {"model_max_length": NO_LIMIT})
    return folder


def _task_folder(folder: Path) -> TaskFolder:
    return TaskFolder(
        root=folder,
        config=json.loads((folder / "config.json").read_text(encoding="utf-8")),
        tokenizer_config={"model_max_length": NO_LIMIT},
        st_config={},
        tokenizer_path=folder / "tokenizer.json",
        weights_path=None,
    )


def test_every_reader_gives_a_roberta_folder_512(roberta_folder: Path) -> None:
    assert ModelConfig.read(roberta_folder).max_sequence_length == 512
    assert read_sentence_transformers(roberta_folder).max_seq_length == 512
    assert _task_folder(roberta_folder).max_length() == 512


@pytest.mark.parametrize(
    ("st", "hf", "tok", "expected"),
    [
        ({"max_seq_length": 256}, {"max_position_embeddings": 512}, {}, 256),
        # a stated limit past the position table would index out of it
        ({"max_seq_length": 1024}, {"max_position_embeddings": 512}, {}, 512),
        ({}, {"max_position_embeddings": 512}, {"model_max_length": 128}, 128),
        ({}, {"max_position_embeddings": 514, "model_type": "xlm-roberta"}, {}, 512),
        ({}, {"max_position_embeddings": 514, "model_type": "mpnet", "pad_token_id": 0}, {}, 512),
        ({}, {}, {"model_max_length": NO_LIMIT}, None),
        ({"max_seq_length": True}, {}, {}, None),
    ],
)
def test_the_rule(
    st: dict[str, object], hf: dict[str, object], tok: dict[str, object], expected: int | None
) -> None:
    assert max_sequence_length(st, hf, tok) == expected
