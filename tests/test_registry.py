"""The model registry: built-in entries, user entries, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from caxton_models.errors import ConfigError, InvalidPath, ModelNotFound, UnsafeModel
from caxton_models.registry import BUILTIN_MODELS, ModelSpec, ModelType, Registry, spec_from_mapping

SPEC_NAMES = {
    "all-MiniLM-L6-v2",
    "all-mpnet-base-v2",
    "multilingual-e5-small",
    "msmarco-distilbert-base-v4",
    "paraphrase-multilingual-mpnet-base-v2",
    "code-search-net",
    "all-MiniLM-L12-v2",
    "distiluse-base-multilingual-cased",
    "bundled-mini",
}


def test_every_model_the_spec_names_is_built_in() -> None:
    assert {s.name for s in BUILTIN_MODELS if s.task == "embedding"} == SPEC_NAMES


def test_rerankers_and_sparse_encoders_are_built_in_with_their_task() -> None:
    tasks = {s.name: s.task for s in BUILTIN_MODELS if s.task != "embedding"}
    assert tasks == {
        "ms-marco-MiniLM-L6-v2": "rerank",
        "bge-reranker-v2-m3": "rerank",
        "splade-cocondenser-ensembledistil": "sparse",
    }
    reg = Registry()
    assert reg.get("cross-encoder/ms-marco-MiniLM-L6-v2").task == "rerank"
    # They run from safetensors and need no sentence-transformers module files.
    for name in tasks:
        spec = reg.get(name)
        assert spec.weights == ("model.safetensors",)
        assert "modules.json" not in spec.required_files
    with pytest.raises(ValueError, match="task 'classify'"):
        ModelSpec("x", "a/x", ModelType.ONNX, "bert", 1, 8, 1, task="classify")
    with pytest.raises(ConfigError, match="task"):
        spec_from_mapping("x", {"model_id": "a/x", "dimensions": 1, "task": "nope"})


def test_default_model_is_pinned_to_known_revision_and_hashes(minilm_dir: Path) -> None:
    spec = Registry().get("all-MiniLM-L6-v2")
    assert spec.revision == "1110a243fdf4706b3f48f1d95db1a4f5529b4d41" and spec.pinned
    assert spec.checksums["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    assert spec.dimensions == 384 and spec.max_sequence_length == 256
    assert spec.model_type is ModelType.ONNX and spec.weights_file == "onnx/model.onnx"
    # Every pinned hash agrees with the real files' SHA256SUMS.
    sums = {}
    for line in (minilm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name.removeprefix("./")] = digest
    for path, digest in spec.checksums.items():
        assert sums[path] == digest, path
    # onnx/model.onnx there is a local export, not the Hub's: not pinned.
    assert "onnx/model.onnx" not in spec.checksums


def test_bundled_shares_the_default_space() -> None:
    reg = Registry()
    assert reg.get("bundled-mini").space == reg.get("all-MiniLM-L6-v2").space
    assert reg.get("bundled-mini").bundled
    assert reg.get("all-MiniLM-L12-v2").space != reg.get("all-MiniLM-L6-v2").space


def test_e5_has_prefixes() -> None:
    e5 = Registry().get("multilingual-e5-small")
    assert e5.query_prefix == "query: " and e5.passage_prefix == "passage: "


def test_model_type_decides_files() -> None:
    st = spec_from_mapping(
        "st", {"model_id": "org/st", "dimensions": 8, "model_type": "safetensors"}
    )
    # Runnable types take a shipped ONNX export first, else the safetensors.
    assert st.weights == ("onnx/model.onnx", "model.onnx", "model.safetensors")
    assert st.choose_weights(["model.safetensors", "config.json"]) == "model.safetensors"
    assert st.choose_weights(["onnx/model.onnx", "model.safetensors"]) == "onnx/model.onnx"
    assert st.choose_weights(["config.json"]) is None
    assert not set(st.weights) & set(st.required_files)
    pt = spec_from_mapping(
        "pt", {"model_id": "org/pt", "dimensions": 8, "model_type": "sentence_transformer"}
    )
    assert pt.weights == ("pytorch_model.bin",)
    with pytest.raises(UnsafeModel, match="pickle"):
        pt.check_safe()
    pt.check_safe(allow_pickle=True)
    allowed = spec_from_mapping(
        "pt2",
        {
            "model_id": "org/pt",
            "dimensions": 8,
            "model_type": "sentence_transformer",
            "allow_pickle": True,
        },
    )
    allowed.check_safe()


def test_lookup_by_hub_id_and_suggestion() -> None:
    reg = Registry()
    assert reg.get("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    with pytest.raises(ModelNotFound) as exc:
        reg.get("all-MiniLM-L6-v3")
    assert "all-MiniLM-L6-v2" in str(exc.value)


def test_user_models_from_config_override_builtins() -> None:
    reg = Registry.from_config(
        {
            "all-MiniLM-L6-v2": {"model_id": "mirror/minilm", "dimensions": 384},
            "x": {"model_id": "o/x", "dimensions": 3},
        }
    )
    assert reg.get("all-MiniLM-L6-v2").model_id == "mirror/minilm"
    assert reg.get("x").dimensions == 3


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"dimensions": 3}, "model_id"),
        ({"model_id": "o/x"}, "dimensions"),
        ({"model_id": "o/x", "dimensions": 3, "pooling": "sum"}, "pooling"),
        ({"model_id": "o/x", "dimensions": 3, "model_type": "keras"}, "onnx"),
        ({"model_id": "o/x", "dimensions": "3"}, "whole number"),
        ({"model_id": "../x", "dimensions": 3}, "model_id"),
        ({"model_id": "o/x", "dimensions": 3, "revision": "../../etc"}, "revision"),
        ({"model_id": "o/x", "dimensions": 3, "checksums": {"config.json": "abc"}}, "64"),
        ({"model_id": "o/x", "dimensions": 3, "normalise": True}, "normalize"),
    ],
)
def test_bad_user_entries(entry: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        spec_from_mapping("mine", entry)
    assert needle in str(exc.value)


def test_unsafe_file_names_in_user_entry() -> None:
    with pytest.raises(ConfigError, match=r"'\.\./x'"):
        spec_from_mapping("mine", {"model_id": "o/x", "dimensions": 3, "required_files": ["../x"]})
    with pytest.raises(InvalidPath):
        ModelSpec(
            name="m",
            model_id="o/x",
            model_type=ModelType.ONNX,
            architecture="bert",
            dimensions=3,
            max_sequence_length=8,
            size_mb=1,
            required_files=("/etc/passwd",),
        )


def test_to_dict_round_trips() -> None:
    for spec in BUILTIN_MODELS:
        d = spec.to_dict()
        again = ModelSpec(
            **{
                **d,
                "model_type": ModelType(d["model_type"]),
                "compatibility": spec.compatibility,
                **{k: tuple(v) for k, v in d.items() if isinstance(v, list)},
            }
        )
        assert again == spec


def test_prompts_are_a_registry_field() -> None:
    spec = spec_from_mapping(
        "nomic",
        {"model_id": "org/nomic", "dimensions": 768, "query_prefix": "q: ",
         "prompts": {"query": "search_query: ", "document": "search_document: "}},
    )  # fmt: skip
    # The e5-style prefixes are the prompts of those names; explicit prompts win.
    assert spec.all_prompts == {"query": "search_query: ", "document": "search_document: "}
    assert spec_from_mapping("e", {"model_id": "o/e", "dimensions": 4, "passage_prefix": "p: "}
                             ).all_prompts == {"passage": "p: "}  # fmt: skip
    with pytest.raises(ConfigError, match="prompts"):
        spec_from_mapping("bad", {"model_id": "o/b", "dimensions": 4, "prompts": ["q: "]})
    with pytest.raises(ConfigError, match="onnx_variants"):  # read from the repo, never set
        spec_from_mapping("bad", {"model_id": "o/b", "dimensions": 4, "onnx_variants": []})
