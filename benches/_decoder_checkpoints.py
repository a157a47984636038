"""Random-weight sentence-transformers folders of decoder embedders at their
real sizes (Qwen3-Embedding-0.6B, EmbeddingGemma-300m), written without
torch and without holding a whole checkpoint in memory.

The configs are the public ones of those repositories (config.json as they
ship it, the older layout with ``rope_theta`` at the top), the tokenizer the
shared MiniLM one (its ids fit both vocabularies). ``SMALL`` gives the same
families at toy sizes for the smoke run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

QWEN3_06B: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151669,
}
EMBEDDINGGEMMA_300M: dict[str, Any] = {
    "architectures": ["Gemma3TextModel"],
    "model_type": "gemma3_text",
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 768,
    "intermediate_size": 1152,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 4,
    "max_position_embeddings": 2048,
    "num_attention_heads": 3,
    "num_hidden_layers": 24,
    "num_key_value_heads": 1,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 512,
    "torch_dtype": "float32",
    "use_bidirectional_attention": True,
    "vocab_size": 262144,
}
#: name -> (config, weights dtype, pooling, Dense layers (in, out), padding side)
MODELS: dict[str, tuple[dict[str, Any], str, str, list[tuple[int, int]], str]] = {
    "qwen3-embedding-0.6b": (QWEN3_06B, "BF16", "lasttoken", [], "left"),
    "embeddinggemma-300m": (
        EMBEDDINGGEMMA_300M,
        "F32",
        "mean",
        [(768, 3072), (3072, 768)],
        "right",
    ),
}
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 30522,
    "max_window_layers": 2,
}


def config_of(name: str, full: bool) -> dict[str, Any]:
    config = dict(MODELS[name][0])
    if not full:
        config.update(SMALL)
        if "layer_types" in config:
            config["layer_types"] = ["sliding_attention", "full_attention"]
            config["sliding_window"] = 8
    return config


def tensor_shapes(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor a Qwen3Model / Gemma3TextModel checkpoint holds."""
    h, d = config["hidden_size"], config["head_dim"]
    q, kv, inter = (
        config["num_attention_heads"] * d,
        config["num_key_value_heads"] * d,
        config["intermediate_size"],
    )
    gemma = config["model_type"] == "gemma3_text"
    out: list[tuple[str, tuple[int, ...]]] = [("embed_tokens.weight", (config["vocab_size"], h))]
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "self_attn.q_norm.weight", (d,)),
            (p + "self_attn.k_norm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
        if gemma:
            out += [(p + "pre_feedforward_layernorm.weight", (h,)),
                    (p + "post_feedforward_layernorm.weight", (h,))]  # fmt: skip
    return [*out, ("norm.weight", (h,))]


def write_safetensors(
    path: Path,
    tensors: list[tuple[str, tuple[int, ...]]],
    dtype: str,
    seed: int,
    norm_center: float = 1.0,
) -> int:
    """Random normal(0, 0.05) tensors (norm weights around ``norm_center``),
    generated and written in slices of at most 8M values; returns the number
    of parameters."""
    width = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors:
        size = int(np.prod(shape)) * width
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in tensors:
            count = int(np.prod(shape))
            for start in range(0, count, 1 << 23):
                values = rng.standard_normal(min(1 << 23, count - start), dtype=np.float32)
                values *= 0.05
                if name.endswith("norm.weight"):
                    values += norm_center
                f.write(_encode(values, dtype))
    return sum(int(np.prod(s)) for _, s in tensors)


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":  # round to nearest even, as torch does
        bits = values.view(np.uint32)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).astype("<u2").tobytes()
    return values.astype("<f2" if dtype == "F16" else "<f4").tobytes()


def write_model(folder: Path, name: str, full: bool, minilm_dir: Path) -> int:
    """A sentence-transformers folder of ``name`` in ``folder``; returns its
    parameter count."""
    config, dtype, pooling, dense, side = MODELS[name]
    config = config_of(name, full)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    # Gemma's norms scale by 1 + weight: their identity is a weight of 0.
    center = 0.0 if config["model_type"] == "gemma3_text" else 1.0
    params = write_safetensors(
        folder / "model.safetensors", tensor_shapes(config), dtype, 0, center
    )
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / f, folder / f)
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok, "padding_side": side}))
    hidden = config["hidden_size"]
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    pool = folder / "1_Pooling"
    pool.mkdir(exist_ok=True)
    (pool / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_lasttoken": pooling == "lasttoken",
    }))  # fmt: skip
    modules.append(
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    )
    if dense and not full:
        dense = [(hidden, 2 * hidden), (2 * hidden, hidden)]
    for i, (n_in, n_out) in enumerate(dense):
        d = folder / f"{i + 2}_Dense"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({
            "in_features": n_in, "out_features": n_out, "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        }))  # fmt: skip
        write_safetensors(d / "model.safetensors", [("linear.weight", (n_out, n_in))], "F32", i + 1)
        modules.append({"idx": i + 2, "name": str(i + 2), "path": d.name,
                        "type": "sentence_transformers.models.Dense"})  # fmt: skip
    n = len(modules)
    modules.append({"idx": n, "name": str(n), "path": f"{n}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})  # fmt: skip
    (folder / f"{n}_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=1))
    return params
