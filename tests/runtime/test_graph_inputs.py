"""Graphs fed from their own input list: position ids counted over real
tokens whichever side is padded, an empty past cache for decoder exports,
``padding_side`` from tokenizer_config.json, last-token pooling on both sides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caxton_models.errors import InvalidModelFormat
from caxton_models.runtime._feeds import GraphFeeds, left_align, position_ids
from caxton_models.runtime.embedder import Embedder
from tests.support.onnx_exports import decoder_export, lasttoken_folder

TEXTS = ["a", "the quick brown fox jumps", "hello world", "x y z " * 5]


class _Input:
    def __init__(self, name: str, kind: str = "tensor(int64)", shape: Any = ("b", "s")) -> None:
        self.name, self.type, self.shape = name, kind, list(shape)


def test_left_align_and_positions() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.int64)
    ids = np.array([[5, 6, 0, 0], [1, 2, 3, 4], [9, 0, 0, 0]], np.int64)
    left_mask, left_ids = left_align(mask, ids)
    assert left_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert left_ids.tolist() == [[0, 0, 5, 6], [1, 2, 3, 4], [0, 0, 0, 9]]
    assert position_ids(left_mask).tolist() == [[1, 1, 0, 1], [0, 1, 2, 3], [1, 1, 1, 0]]
    assert position_ids(mask).tolist() == [[0, 1, 1, 1], [0, 1, 2, 3], [0, 1, 1, 1]]


def test_feeds_follow_the_graph_inputs() -> None:
    ids = np.array([[5, 6, 0]], np.int64)
    mask = np.array([[1, 1, 0]], np.int64)
    types = np.zeros_like(ids)
    feeds, _ = GraphFeeds([_Input("input_ids"), _Input("attention_mask")], left_padding=False)(
        ids, mask, types
    )
    assert set(feeds) == {"input_ids", "attention_mask"}
    graph = [
        _Input("input_ids", "tensor(int32)"),
        _Input("attention_mask"),
        _Input("token_type_ids"),
        _Input("past_key_values.0.key", "tensor(float16)", ("batch", 2, "past", 4)),
        _Input("use_cache_branch", "tensor(bool)", (1,)),
    ]
    feeds, seen = GraphFeeds(graph, left_padding=True)(ids, mask, types)
    assert feeds["input_ids"].dtype == np.int32 and feeds["input_ids"].tolist() == [[0, 5, 6]]
    assert seen.tolist() == [[0, 1, 1]] and feeds["token_type_ids"].tolist() == [[0, 0, 0]]
    assert feeds["past_key_values.0.key"].shape == (1, 2, 0, 4)
    assert feeds["past_key_values.0.key"].dtype == np.float16
    assert feeds["use_cache_branch"].tolist() == [False]
    with pytest.raises(InvalidModelFormat, match="'pixel_values'"):
        GraphFeeds(
            [_Input("input_ids"), _Input("pixel_values", "tensor(float)")], left_padding=False
        )


def _solo(tables: dict[str, np.ndarray], tok: Any, text: str) -> np.ndarray:
    """The last token's vector of one unpadded text, from the tables alone."""
    ids = tok.encode(text).ids
    v = tables["tok"][ids[-1]] + tables["pos"][len(ids) - 1]
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_export_with_position_ids_pools_the_last_token(
    tmp_path: Path, minilm_dir: Path, side: str
) -> None:
    from tokenizers import Tokenizer

    folder = tmp_path / side
    lasttoken_folder(folder, minilm_dir / "tokenizer.json", side)
    tables = decoder_export(folder / "onnx" / "model.onnx", vocab=30522)
    emb = Embedder.from_dir(folder, optimize=False, parallel_batches=1)
    assert emb._left_padding is (side == "left") and emb.dimensions == 8
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()
    want = np.stack([_solo(tables, tok, t) for t in TEXTS])
    np.testing.assert_allclose(emb.embed(TEXTS), want, atol=1e-6)
    # One batch of mixed lengths (padding everywhere) and one text at a time agree.
    np.testing.assert_allclose(emb.embed(TEXTS[:1]), want[:1], atol=1e-6)


def test_padding_side_falls_back_to_tokenizer_json(tmp_path: Path, minilm_dir: Path) -> None:
    folder = tmp_path / "m"
    lasttoken_folder(folder, minilm_dir / "tokenizer.json", "left")
    (folder / "tokenizer_config.json").write_text("{}")
    raw = json.loads((folder / "tokenizer.json").read_text())
    raw["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None,
                      "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(raw))
    decoder_export(folder / "model.onnx", vocab=30522)  # a root-level export
    emb = Embedder.from_dir(folder, optimize=False)
    assert emb._left_padding and emb.graph_path == folder / "model.onnx"
    (folder / "tokenizer_config.json").write_text('{"padding_side": "middle"}')
    with pytest.raises(InvalidModelFormat, match="padding_side 'middle'"):
        Embedder.from_dir(folder, optimize=False)


def test_eos_comes_from_the_post_processor_once(tmp_path: Path, minilm_dir: Path) -> None:
    """A Qwen3-Embedding-style tokenizer whose post-processor appends the EOS
    token: it ends every text once (never appended a second time), and
    last-token pooling takes it."""
    from tokenizers import Tokenizer

    folder = tmp_path / "eos"
    lasttoken_folder(folder, minilm_dir / "tokenizer.json", "left")
    raw = json.loads((folder / "tokenizer.json").read_text())
    eos = {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
    raw["post_processor"]["single"] = [{"Sequence": {"id": "A", "type_id": 0}}, eos]
    (folder / "tokenizer.json").write_text(json.dumps(raw))
    tables = decoder_export(folder / "model.onnx", vocab=30522)
    emb = Embedder.from_dir(folder, optimize=False)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    ids = emb._tokenizer.encode("hello world").ids
    assert ids[-1] == 102 and ids[-2] != 102 and 101 not in ids
    want = np.stack([_solo(tables, tok, t) for t in TEXTS])
    np.testing.assert_allclose(emb.embed(TEXTS), want, atol=1e-6)
