"""Cross-encoder rerankers built from safetensors reproduce sentence-transformers'
``CrossEncoder`` (fixtures/architectures/rerank-*: random BERT and XLM-R
sequence classifiers with the scores CrossEncoder.predict gave), and load
through the registry, the cache and the CLI like embedding models (a
Hub-protocol server on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caxton_models
from caxton_models.errors import InvalidModelFormat
from caxton_models.ops.server import Catalog, ServerThread
from caxton_models.runtime._taskmodel import TaskFolder
from caxton_models.runtime.reranker import Reranker, activate, default_activation

FIXTURES = ("rerank-bert", "rerank-xlm-roberta")
COMMIT = "c0ffee" + "0" * 34


def _pairs(folder: Path) -> list[tuple[str, str]]:
    return [(q, d) for q, d in json.loads((folder / "pairs.json").read_text(encoding="utf-8"))]


@pytest.mark.parametrize("name", FIXTURES)
def test_scores_match_cross_encoder(
    name: str, architectures_dir: Path, graph_cache_dir: Path
) -> None:
    folder = architectures_dir / name
    ranker = Reranker.from_dir(folder, graph_cache_dir=graph_cache_dir)
    pairs = _pairs(folder)
    expected = np.load(folder / "scores.npy")
    scores = ranker.predict(pairs)
    assert scores.shape == (len(pairs),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert list(np.argsort(-scores)) == list(np.argsort(-expected))
    logits = ranker.predict(pairs, activation="identity")
    np.testing.assert_allclose(logits, np.load(folder / "logits.npy"), atol=1e-4)
    # What CrossEncoder(folder) reads: sigmoid for one label, max_length 48.
    assert ranker.activation == "sigmoid" and ranker.max_length == 48


@pytest.mark.parametrize("name", FIXTURES)
def test_long_pairs_are_truncated_as_cross_encoder_truncates_them(
    name: str, architectures_dir: Path, graph_cache_dir: Path
) -> None:
    """rerank_truncation.json: CrossEncoder's scores of pairs longer than
    max_length (its made_by says how they were computed)."""
    reference = json.loads(Path(__file__).with_name("rerank_truncation.json").read_text())
    queries = ["what is a decorator " * k for k in (1, 3, 20, 40)]
    documents = ["A decorator wraps a function " * k for k in (1, 30, 2, 40)]
    pairs = [(q, d) for q in queries for d in documents]
    ranker = Reranker.from_dir(architectures_dir / name, graph_cache_dir=graph_cache_dir)
    assert max(len(e.ids) for e in ranker._tokenizer.encode_batch(pairs)) == 48
    np.testing.assert_allclose(ranker.predict(pairs), reference[name], atol=1e-4)


def test_xlm_roberta_takes_the_bert_tokenizers_type_ids(
    architectures_dir: Path, graph_cache_dir: Path
) -> None:
    """The XLM-R fixture has a 2-row token type table and a BERT tokenizer
    (whose pair template gives the document type 1): transformers adds the
    row each token names, so must we; a real XLM-R tokenizer gives none."""
    folder = TaskFolder.read(architectures_dir / "rerank-xlm-roberta", task="reranker")
    assert folder.gives_token_types()
    ranker = Reranker(folder, graph_cache_dir=graph_cache_dir)
    assert "token_type_ids" in ranker._runner.inputs
    xlmr = TaskFolder.read(architectures_dir / "rerank-xlm-roberta", task="reranker")
    object.__setattr__(xlmr, "tokenizer_config", {"tokenizer_class": "XLMRobertaTokenizer"})
    assert not xlmr.gives_token_types()


def test_rerank_orders_documents_and_cuts_top_k(
    architectures_dir: Path, graph_cache_dir: Path
) -> None:
    folder = architectures_dir / "rerank-bert"
    ranker = Reranker.from_dir(folder, graph_cache_dir=graph_cache_dir)
    query = "how do I install it?"
    docs = [d for _, d in _pairs(folder)]
    expected = ranker.predict([(query, d) for d in docs])
    ranked = ranker.rerank(query, docs)
    assert [i for i, _ in ranked] == list(np.argsort(-expected, kind="stable"))
    assert [s for _, s in ranked] == sorted(expected.tolist(), reverse=True)
    assert ranker.rerank(query, docs, top_k=2) == ranked[:2]
    assert ranker.rerank(query, []) == []
    with pytest.raises(ValueError, match="top_k"):
        ranker.rerank(query, docs, top_k=-1)
    with pytest.raises(TypeError, match="list of strings"):
        ranker.rerank(query, "one document")


def test_batching_sorts_by_length_and_keeps_the_callers_order(
    architectures_dir: Path, graph_cache_dir: Path
) -> None:
    """Many pairs of mixed lengths, cut into several padded batches: every
    score lands at its own pair, equal to the pair scored alone, and pairs
    longer than max_length are truncated (longest first) as transformers does."""
    folder = architectures_dir / "rerank-bert"
    ranker = Reranker.from_dir(folder, graph_cache_dir=graph_cache_dir, token_budget=128)
    base = _pairs(folder)
    pairs = [(q + " " + "word " * (i % 7), d * (1 + i % 5)) for i, (q, d) in enumerate(base * 6)]
    together = ranker.predict(pairs)
    alone = np.array([ranker.predict([p])[0] for p in pairs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    enc = ranker._tokenizer.encode_batch(pairs)
    assert max(len(e.ids) for e in enc) == ranker.max_length


def test_pair_errors_are_typed(architectures_dir: Path, graph_cache_dir: Path) -> None:
    ranker = Reranker.from_dir(architectures_dir / "rerank-bert", graph_cache_dir=graph_cache_dir)
    assert ranker.predict([]).shape == (0,)
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        ranker.predict([("q", "d"), ("q",)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of"):
        ranker.predict("q")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation"):
        ranker.predict([("q", "d")], activation="softplus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length 3 leaves no room"):
        Reranker.from_dir(
            architectures_dir / "rerank-bert", graph_cache_dir=graph_cache_dir, max_length=3
        )


def test_activation_is_read_where_each_sentence_transformers_version_keeps_it(
    tmp_path: Path, architectures_dir: Path
) -> None:
    src = architectures_dir / "rerank-bert"
    folder = tmp_path / "ce"
    shutil.copytree(src, folder)
    st_cfg = folder / "config_sentence_transformers.json"
    assert default_activation(TaskFolder.read(folder, task="r")) == "sigmoid"
    st_cfg.unlink()
    config = json.loads((folder / "config.json").read_text())
    # sentence-transformers 4/5: config.json's sentence_transformers block
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (folder / "config.json").write_text(json.dumps(config))
    assert default_activation(TaskFolder.read(folder, task="r")) == "identity"
    # older: sbert_ce_default_activation_function
    del config["sentence_transformers"]
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.activation.Tanh"
    (folder / "config.json").write_text(json.dumps(config))
    assert default_activation(TaskFolder.read(folder, task="r")) == "tanh"
    # not a torch class: CrossEncoder ignores it (without trust_remote_code)
    config["sbert_ce_default_activation_function"] = "mypackage.Evil"
    (folder / "config.json").write_text(json.dumps(config))
    assert default_activation(TaskFolder.read(folder, task="r")) == "sigmoid"
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.activation.Softplus"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModelFormat, match="Softplus"):
        default_activation(TaskFolder.read(folder, task="r"))
    # several labels and nothing said: the logits as they are
    del config["sbert_ce_default_activation_function"]
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (folder / "config.json").write_text(json.dumps(config))
    assert default_activation(TaskFolder.read(folder, task="r")) == "identity"
    x = np.array([[-100.0, 0.0, 100.0]], np.float32)
    np.testing.assert_allclose(activate(x, "sigmoid"), [[0.0, 0.5, 1.0]], atol=1e-7)
    np.testing.assert_allclose(activate(x, "softmax").sum(), 1.0, atol=1e-6)


def test_a_folder_with_only_an_onnx_export_runs_it(tmp_path: Path, architectures_dir: Path) -> None:
    """Cross-encoder repos often ship onnx/model.onnx (logits out): without
    model.safetensors, that graph is run as it is."""
    import onnx

    from caxton_models.runtime._modelconfig import read_tensors
    from caxton_models.runtime.graph.task_heads import build_classifier

    src = architectures_dir / "rerank-bert"
    folder = tmp_path / "onnx-only"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    graph = build_classifier(config, read_tensors(src / "model.safetensors"), external=False)
    (folder / "onnx").mkdir()
    onnx.save(graph.model, str(folder / "onnx" / "model.onnx"))
    ranker = Reranker.from_dir(folder)
    assert ranker.graph_path == folder / "onnx" / "model.onnx"
    np.testing.assert_allclose(ranker.predict(_pairs(src)), np.load(src / "scores.npy"), atol=1e-4)


def test_load_refuses_a_cross_encoder_folder(architectures_dir: Path) -> None:
    """Built as an encoder, a cross-encoder would embed (mean-pooled, meaning
    nothing) without a word: load() says which loader it needs."""
    with pytest.raises(InvalidModelFormat, match="load_reranker"):
        caxton_models.load(architectures_dir / "rerank-bert")


def test_folders_that_are_not_cross_encoders_are_refused(
    tmp_path: Path, architectures_dir: Path
) -> None:
    with pytest.raises(InvalidModelFormat, match="not a cross-encoder"):
        Reranker.from_dir(architectures_dir / "splade-bert", graph_cache_dir=tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(architectures_dir / "rerank-bert", broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(InvalidModelFormat, match="no weights"):
        Reranker.from_dir(broken)
    mpnet = tmp_path / "mpnet"
    shutil.copytree(architectures_dir / "rerank-bert", mpnet)
    config = json.loads((mpnet / "config.json").read_text())
    config["model_type"] = "mpnet"
    (mpnet / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModelFormat, match="mpnet sequence classifier"):
        Reranker.from_dir(mpnet, graph_cache_dir=tmp_path)


# --------------------------------------------------------------------------- loading


@pytest.fixture
def reranker_server(architectures_dir: Path) -> Iterator[ServerThread]:
    """The BERT fixture served as the registry's ms-marco-MiniLM-L6-v2 and
    as an arbitrary repo; the XLM-R one as another arbitrary repo."""
    bert = architectures_dir / "rerank-bert"
    catalog = Catalog.from_folder(bert, "cross-encoder/ms-marco-MiniLM-L6-v2", commit=COMMIT)
    catalog.merge(Catalog.from_folder(bert, "acme/tiny-reranker", commit=COMMIT))
    xlmr = architectures_dir / "rerank-xlm-roberta"
    catalog.merge(Catalog.from_folder(xlmr, "acme/tiny-xlmr-reranker", commit=COMMIT))
    with ServerThread(catalog) as srv:
        yield srv


def test_load_reranker_by_registry_name_and_any_repo(
    reranker_server: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    architectures_dir: Path,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", reranker_server.url)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    for name, fixture in (
        ("ms-marco-MiniLM-L6-v2", "rerank-bert"),
        ("acme/tiny-xlmr-reranker", "rerank-xlm-roberta"),
    ):
        ranker = caxton_models.load_reranker(name)
        folder = architectures_dir / fixture
        np.testing.assert_allclose(
            ranker.predict(_pairs(folder)), np.load(folder / "scores.npy"), atol=1e-4
        )
        assert ranker.revision == COMMIT
        assert caxton_models.load_reranker(name) is ranker  # one per process
    installed = tmp_path / "cache" / "ms-marco-MiniLM-L6-v2"
    assert (installed / ".caxton_checksum").is_file()
    _full_validation_scores_a_pair(tmp_path / "cache", "ms-marco-MiniLM-L6-v2")
    assert not (installed / "pairs.json").exists()  # only what the model needs
    # A reranker is not an embedding model, and the other way round.
    with pytest.raises(InvalidModelFormat, match="load_reranker"):
        caxton_models.load("ms-marco-MiniLM-L6-v2")
    with pytest.raises(InvalidModelFormat, match=r"caxton_models.load\(\)"):
        caxton_models.load_reranker("all-MiniLM-L6-v2")


def _full_validation_scores_a_pair(cache_dir: Path, name: str) -> None:
    """Full validation's functional step runs the model as what it is (a
    reranker scores a pair: one number per label), not as an embedder."""
    from caxton_models.acquire.validate import validate_model
    from caxton_models.registry import Registry
    from caxton_models.store import ModelCache

    installed = ModelCache(cache_dir).get(name)
    assert installed is not None
    report = validate_model(installed, Registry().get(name), mode="full", functional=True)
    assert report.ok, report.summary()
    assert report.embedding_dimensions == 1


def test_cli_rerank(
    reranker_server: ServerThread,
    tmp_path: Path,
    architectures_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from caxton_models.ops.cli import main

    monkeypatch.setenv("HF_ENDPOINT", reranker_server.url)
    monkeypatch.setenv("CAXTON_CACHE_DIR", str(tmp_path / "cache"))
    folder = architectures_dir / "rerank-bert"
    pairs = _pairs(folder)[:2]
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(d for _, d in pairs) + "\n", encoding="utf-8")
    args = ["rerank", pairs[0][0], "--input", str(docs)]
    assert main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = np.load(folder / "scores.npy")[:2]
    assert [r["index"] for r in rows] == list(np.argsort(-expected))
    np.testing.assert_allclose(
        [r["score"] for r in rows], sorted(expected, reverse=True), atol=1e-4
    )
    assert rows[0]["model"] == "cross-encoder/ms-marco-MiniLM-L6-v2" and rows[0]["rank"] == 1
    assert main([*args, "--top-k", "1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["1", f"{expected.max():.5f}", str(int(np.argmax(expected)))]
    assert main([*args, "--top-k", "0"]) == 1
    assert "--top-k" in capsys.readouterr().err
    assert main(["rerank", "q", "--input", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        main(["rerank", "--help"])
    assert help_exit.value.code == 0
    assert "example:" in capsys.readouterr().out
    assert main(["model", "list", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["ms-marco-MiniLM-L6-v2"]["task"] == "rerank"
    assert listed["all-MiniLM-L6-v2"]["task"] == "embedding"


def test_graphs_of_two_rerankers_share_a_cache_folder(
    tmp_path: Path, architectures_dir: Path
) -> None:
    """Both fixtures are outside any cache, so their graphs share one folder:
    each keeps mapping its own weights."""
    graphs = tmp_path / "graphs"
    for _ in range(2):
        for name in FIXTURES:
            folder = architectures_dir / name
            ranker = Reranker.from_dir(folder, graph_cache_dir=graphs)
            np.testing.assert_allclose(
                ranker.predict(_pairs(folder)), np.load(folder / "scores.npy"), atol=1e-4
            )
