"""One list of runnable weights (registry.runnable_weights): the registry's default
for a spec, the ad-hoc resolver's choice from a repository listing, and the folder
readers of the runtime. Before, three lists: a registry reranker without explicit
weights preferred ``onnx/model.onnx``, which its task head never runs (heads are
built from safetensors), while the ad-hoc resolver chose safetensors for it."""

from __future__ import annotations

import pytest

from caxton_models.acquire._adhoc import _weights as adhoc_weights
from caxton_models.registry import ModelSpec, ModelType, runnable_weights

LISTING = ["config.json", "onnx/model.onnx", "model.onnx", "model.safetensors"]


@pytest.mark.parametrize("task", ["embedding", "rerank", "sparse"])
@pytest.mark.parametrize("model_type", [ModelType.ONNX, ModelType.SAFETENSORS])
def test_registry_and_ad_hoc_choose_the_same_weights(task: str, model_type: ModelType) -> None:
    spec = ModelSpec("x", "org/x", model_type, "bert", 1, 8, 1, task=task)
    assert spec.weights == runnable_weights(task)
    for listing in (LISTING, LISTING[:1] + LISTING[2:], LISTING[:2]):
        assert spec.choose_weights(listing) == adhoc_weights("org/x", set(listing), task=task)


def test_heads_prefer_safetensors_and_embedders_an_export() -> None:
    assert runnable_weights("embedding")[0] == "onnx/model.onnx"
    assert runnable_weights("rerank")[0] == "model.safetensors"
    assert set(runnable_weights("sparse")) == set(runnable_weights("embedding"))
