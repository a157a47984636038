"""ONNX exports of the shapes the Hub has, made for tests: a graph with its
tensors in external data files, and a decoder-style graph that takes
``position_ids`` and an (empty) ``past_key_values`` cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

#: sentence-transformers files of a model folder (no caxton.json: as on the Hub).
ST_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling",
    "tokenizer.json",
)


def copy_st_files(src: Path, dest: Path, names: tuple[str, ...] = ST_FILES) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        elif (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    return dest


def save_external(graph: Path, dest: Path, location: str) -> None:
    """``graph`` saved at ``dest`` with every tensor in ``location`` (relative
    to dest's folder), as exporters write models over 2 GB."""
    import onnx

    model = onnx.load(str(graph))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)  # fmt: skip


def decoder_export(dest: Path, vocab: int, hidden: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A decoder-shaped export: inputs input_ids, attention_mask, position_ids
    and past_key_values.0.key/value [batch, 2, past, 4]; outputs ``logits``
    first and ``last_hidden_state`` = token table[ids] + position table[pos]
    + the sum of the (empty) cache. Returns the two tables."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    tok = rng.standard_normal((vocab, hidden)).astype(np.float32)
    pos = rng.standard_normal((64, hidden)).astype(np.float32)
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        *(
            helper.make_tensor_value_info(
                f"past_key_values.0.{kv}", TensorProto.FLOAT, ["batch", 2, "past", 4]
            )
            for kv in ("key", "value")
        ),
    ]
    nodes = [
        helper.make_node("Gather", ["tok", "input_ids"], ["t"]),
        helper.make_node("Gather", ["pos", "position_ids"], ["p"]),
        helper.make_node("Add", ["t", "p"], ["tp"]),
        helper.make_node("ReduceSum", ["past_key_values.0.key"], ["pk"], keepdims=0),
        helper.make_node("ReduceSum", ["past_key_values.0.value"], ["pv"], keepdims=0),
        helper.make_node("Add", ["pk", "pv"], ["cache"]),
        helper.make_node("Add", ["tp", "cache"], ["last_hidden_state"]),
        helper.make_node("ReduceSum", ["last_hidden_state", "axis2"], ["logits"], keepdims=1),
    ]
    init = [
        numpy_helper.from_array(tok, "tok"),
        numpy_helper.from_array(pos, "pos"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 1]),
        helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]
        ),
    ]
    graph = helper.make_graph(nodes, "decoder", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return {"tok": tok, "pos": pos}


def lasttoken_folder(dest: Path, tokenizer_json: Path, padding_side: str) -> None:
    """A sentence-transformers folder around a graph: last-token pooling,
    Normalize, ``padding_side`` in tokenizer_config.json."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tokenizer_json, dest / "tokenizer.json")
    (dest / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 8}))
    (dest / "tokenizer_config.json").write_text(
        json.dumps({"padding_side": padding_side, "model_max_length": 48})
    )
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 8, "pooling_mode_lasttoken": True})
    )
