"""Any Hub repository, not only the registry's: a name ``org/name`` the
registry does not know is a repo id. Its own small files decide what it is:
``modules.json`` and the module folders (pooling, Dense) which files it needs,
``config.json`` its architecture, the listing which weights it can run from
(an ONNX export, ``onnx/model.onnx`` or a root ``model.onnx``, with the files
its external tensors live in; else ``model.safetensors``; pickle-only weights
are refused). The result is an ordinary :class:`ModelSpec`, installed as
``org--name``, which also lists the repository's ONNX variants.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from caxton_models import _ids as ids
from caxton_models._core import onnx_external_data
from caxton_models.acquire._plan import external_data
from caxton_models.errors import InvalidModelFormat, UnsafeModel
from caxton_models.registry import (
    ONNX_GRAPHS,
    SAFETENSORS_FILE,
    ModelSpec,
    ModelType,
    is_pickle,
    runnable_weights,
)

#: The small files that say what a repository is, fetched before anything else.
DESCRIBING = ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer_config.json")
#: A graph this small is fetched while describing, to read where its tensors live.
_READ_GRAPH_BELOW = 64 << 20


def is_repo_id(name: str) -> bool:
    """A name the registry resolves as a Hub repository: ``owner/name`` (a bare name is a
    registry entry's)."""
    return "/" in name and ids.is_repo_id(name)


def cache_name(repo_id: str) -> str:
    """The cache folder of a repo id (``org--name``, as the Hub's cache spells it)."""
    return repo_id.replace("/", "--")


def _json(folder: Path, rel: str) -> Any:
    try:
        return json.loads((folder / rel).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidModelFormat(f"{rel} of the repository is not valid JSON: {e}") from None


def module_files(folder: Path) -> list[str]:
    """The config files of the sentence-transformers modules ``modules.json`` names."""
    modules = _json(folder, "modules.json") or []
    if not isinstance(modules, list):
        raise InvalidModelFormat("modules.json is not a list of modules")
    out = []
    for m in modules:
        path = str(m.get("path", "")) if isinstance(m, dict) else ""
        if path:
            out.append(f"{path}/config.json")
    return out


def onnx_variants(listing: Iterable[str]) -> tuple[str, ...]:
    """The repository's ONNX graphs (``onnx_file=`` picks one)."""
    return tuple(sorted(p for p in listing if p.endswith(".onnx")))


def task_of(folder: Path, config: dict[str, Any]) -> str:
    """sparse for a SparseEncoder (SpladePooling), embedding for anything
    with a Pooling module or no head, rerank for a sequence classifier
    without one (a CrossEncoder). A bare masked-LM repo stays an embedding
    model, as it was (sentence-transformers mean-pools such repos)."""
    modules = _json(folder, "modules.json")
    kinds = {
        str(m.get("type", "")).rsplit(".", 1)[-1]
        for m in (modules if isinstance(modules, list) else [])
        if isinstance(m, dict)
    }
    if "SpladePooling" in kinds:
        return "sparse"
    archs = [str(a) for a in config.get("architectures") or []]
    if "Pooling" not in kinds and any(a.endswith("ForSequenceClassification") for a in archs):
        return "rerank"
    return "embedding"


def _weights(
    repo_id: str, listing: set[str], onnx_file: str | None = None, task: str = "embedding"
) -> str:
    if onnx_file is not None:
        if onnx_file not in listing or not onnx_file.endswith(".onnx"):
            variants = ", ".join(onnx_variants(listing)) or "none"
            raise InvalidModelFormat(
                f"{repo_id} has no ONNX graph {onnx_file!r}; its ONNX files: {variants}"
            )
        return onnx_file
    order = runnable_weights(task)
    for w in order:
        if w in listing:
            return w
    pickles = sorted(p for p in listing if is_pickle(p))
    if pickles:
        raise UnsafeModel(
            f"{repo_id} ships its weights only as {', '.join(pickles)} (pickle, which can run "
            "code when loaded); caxton runs onnx/model.onnx or model.safetensors. Convert the "
            "weights to safetensors, or pick a repository that has them.",
            files=pickles,
        )
    raise InvalidModelFormat(f"{repo_id} has no weights caxton can run: none of {', '.join(order)}")


def _dimensions(folder: Path, config: dict[str, Any], extra: list[str]) -> int:
    dense = [f for f in extra if f.split("/")[0].endswith("Dense")]
    for rel in reversed(dense):
        out = (_json(folder, rel) or {}).get("out_features")
        if isinstance(out, int) and out > 0:
            return out
    for rel in extra:
        cfg = _json(folder, rel) or {}
        # sentence-transformers 6 writes embedding_dimension, older ones word_...
        dim = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension"))
        if isinstance(dim, int) and dim > 0:
            return dim
    hidden = config.get("hidden_size", config.get("dim"))
    if not isinstance(hidden, int) or hidden <= 0:
        raise InvalidModelFormat("config.json gives no hidden_size: cannot tell the dimensions")
    return hidden


def _locations(folder: Path, weights: str) -> list[str]:
    """Where the graph's external tensors live, if the graph is in ``folder``
    and small (a graph that keeps its tensors elsewhere is)."""
    graph = folder / weights
    if not weights.endswith(".onnx") or not graph.is_file():
        return []
    if graph.stat().st_size >= _READ_GRAPH_BELOW:  # its tensors are inline, mostly
        return []
    # The core maps the file and walks field headers, skipping tensor bytes.
    try:
        return sorted({loc for loc, _, _ in onnx_external_data(graph)})
    except (OSError, InvalidModelFormat) as e:
        raise InvalidModelFormat(f"{weights} is not a readable ONNX graph: {e}") from None


def describe(
    repo_id: str,
    revision: str,
    folder: Path,
    listing: Iterable[str],
    onnx_file: str | None = None,
) -> ModelSpec:
    """The spec of ``repo_id`` from its describing files in ``folder`` (and the
    module configs, and the graph when it is there) and its file ``listing``."""
    have = set(listing)
    config = _json(folder, "config.json")
    if not isinstance(config, dict):
        raise InvalidModelFormat(f"{repo_id} has no config.json: it is not a transformers model")
    task = task_of(folder, config)
    weights = _weights(repo_id, have, onnx_file, task)
    arch = str(config.get("model_type", "unknown"))
    if weights == SAFETENSORS_FILE:
        from caxton_models.runtime._modelconfig import _supported, unsupported_family

        if arch not in _supported():
            raise unsupported_family(arch, repo_id)
    if "tokenizer.json" not in have:
        raise InvalidModelFormat(f"{repo_id} has no tokenizer.json (a fast tokenizer is needed)")
    extra = [f for f in module_files(folder) if f in have]
    dense_weights = [f"{f.rsplit('/', 1)[0]}/model.safetensors" for f in extra
                     if f.split("/")[0].endswith("Dense")]  # fmt: skip
    st_cfg = _json(folder, "sentence_bert_config.json") or {}
    max_len = st_cfg.get("max_seq_length") or config.get("max_position_embeddings") or 512
    required = [
        "config.json",
        "tokenizer.json",
        *(f for f in DESCRIBING[1:] if f in have),
        *external_data(weights, have, _locations(folder, weights)),
    ]
    dimensions = _dimensions(folder, config, extra)
    if task == "rerank":
        labels = config.get("id2label")
        dimensions = len(labels) if isinstance(labels, dict) and labels else 1
    elif task == "sparse":
        dimensions = int(config.get("vocab_size") or dimensions)
    return ModelSpec(
        name=cache_name(repo_id),
        model_id=repo_id,
        model_type=ModelType.ONNX if weights == ONNX_GRAPHS[0] else ModelType.SAFETENSORS,
        architecture=arch,
        dimensions=dimensions,
        max_sequence_length=int(max_len),
        size_mb=0.0,
        required_files=tuple(dict.fromkeys([*required, *extra, *dense_weights])),
        weights=(weights,),
        onnx_variants=onnx_variants(have),
        revision=revision,
        description=f"{repo_id}, described from its own files",
        task=task,
    )


def describe_remote(
    hub: Any, repo_id: str, revision: str, onnx_file: str | None = None
) -> ModelSpec:
    """Resolve ``repo_id`` on the hub, fetch (verified) the files that describe
    it, and describe it. A small ONNX graph is fetched too, to read where its
    tensors live (an export over 2 GB keeps them in other files)."""
    info = hub.resolve(repo_id, revision)
    listing = {f.path for f in info.files}
    sizes = {f.path: f.size for f in info.files}
    with tempfile.TemporaryDirectory(prefix="caxton-describe") as tmp:
        folder = Path(tmp)
        wanted = [p for p in DESCRIBING if p in listing]
        weights = _weights(repo_id, listing, onnx_file)
        if weights.endswith(".onnx") and int(sizes.get(weights) or 0) < _READ_GRAPH_BELOW:
            wanted.append(weights)
        hub.download_files(info, {p: folder / p for p in wanted})
        modules = [p for p in module_files(folder) if p in listing]
        if modules:
            hub.download_files(info, {p: folder / p for p in modules})
        return describe(repo_id, revision, folder, listing, onnx_file)


def variant_spec(spec: ModelSpec, onnx_file: str) -> ModelSpec:
    """``spec`` running the repository's graph ``onnx_file`` instead, as its own
    cache entry (``<name>--<graph stem>``): only that graph (and the files its
    tensors live in) is downloaded, and the default entry is left as it is."""
    from dataclasses import replace

    from caxton_models._paths import check_repo_path

    check_repo_path(onnx_file, what="onnx_file")
    if not onnx_file.endswith(".onnx"):
        raise InvalidModelFormat(f"onnx_file {onnx_file!r} is not an ONNX graph (*.onnx)")
    if spec.onnx_variants and onnx_file not in spec.onnx_variants:
        raise InvalidModelFormat(
            f"{spec.model_id} has no ONNX graph {onnx_file!r}; its ONNX files: "
            + ", ".join(spec.onnx_variants)
        )
    if spec.weights == (onnx_file,):
        return spec
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", onnx_file.rsplit(".", 1)[0].replace("/", "_"))
    return replace(
        spec,
        name=f"{spec.name}--{stem}",
        model_type=ModelType.ONNX,
        weights=(onnx_file,),
        required_files=tuple(f for f in spec.required_files if not _is_data(f, spec.weights)),
    )


def _is_data(path: str, weights: tuple[str, ...]) -> bool:
    return any(path in external_data(w, [path]) for w in weights)
