"""The model registry: names -> :class:`ModelSpec`.

Built-in entries cover every model the spec names. A spec carries the spec's
fields (model_id, model_type, architecture, dimensions, max_sequence_length,
size_mb, checksums, required_files, compatibility) plus what inference needs
(pooling, normalisation, query/passage prefixes, an embedding-space id) and a
revision. Where the registry knows a file's SHA-256 it is enforced; where it
does not, the Hub's LFS SHA-256 is taken at first download and recorded in the
model's ``.caxton_checksum`` (trust on first use), then enforced from there on.

``model_type`` decides the weight file: ``onnx`` repos use ``onnx/model.onnx``,
``safetensors`` repos ``model.safetensors``. ``sentence_transformer`` means
PyTorch pickle weights (``pytorch_model.bin``), refused with
:class:`UnsafeModel` unless ``allow_pickle`` is set explicitly.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from caxton_models._ids import is_commit, is_repo_id, is_revision, is_sha256
from caxton_models._paths import check_name, check_repo_path
from caxton_models.errors import ConfigError, ModelNotFound, UnsafeModel

__all__ = [
    "BUILTIN_MODELS",
    "Compatibility",
    "ModelSpec",
    "ModelType",
    "Registry",
    "is_pickle",
    "spec_from_mapping",
]

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: ModelSpec.task values.
TASKS = ("embedding", "rerank", "sparse")


def is_pickle(path: str) -> bool:
    """Weights that unpickle (arbitrary code on load)."""
    return path.lower().endswith(_PICKLE_SUFFIXES)


class ModelType(str, Enum):
    SENTENCE_TRANSFORMER = "sentence_transformer"  # PyTorch pickle weights
    ONNX = "onnx"
    SAFETENSORS = "safetensors"
    TFLITE = "tflite"


#: A repository's ONNX export, where the runtime looks for one.
ONNX_GRAPHS = ("onnx/model.onnx", "model.onnx")
#: The weights the runtime builds a graph from (runtime/graph).
SAFETENSORS_FILE = "model.safetensors"


def runnable_weights(task: str = "embedding") -> tuple[str, ...]:
    """The weights a model of ``task`` runs from, best first: the one list the registry,
    the ad-hoc resolver and the runtime's folder readers choose by. An embedding model
    prefers a shipped ONNX export (no graph to build); the task heads (rerank, sparse)
    are built from safetensors (a SPLADE export's ONNX gives per-token logits)."""
    if task == "embedding":
        return (*ONNX_GRAPHS, SAFETENSORS_FILE)
    return (SAFETENSORS_FILE, *ONNX_GRAPHS)


# Weights of the types the runtime does not run (refused or converted first).
_WEIGHTS = {
    ModelType.SENTENCE_TRANSFORMER: ("pytorch_model.bin",),
    ModelType.TFLITE: ("model.tflite",),
}
# What every sentence-transformers repo needs beside its weights: tokenizer
# (fast tokenizer JSON), the model config and the module/pooling description.
_COMMON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
_ST_FILES = ("modules.json", "1_Pooling/config.json")
_OPTIONAL_FILES = (
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


@dataclass(frozen=True)
class Compatibility:
    """Runtime requirements: the minimum onnxruntime, the ONNX opset the
    export uses, and the platforms the model is known to work on (empty = all)."""

    min_onnxruntime: str = "1.17"
    onnx_opset: int | None = None
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_id: str
    model_type: ModelType
    architecture: str
    dimensions: int
    max_sequence_length: int
    size_mb: float
    checksums: Mapping[str, str] = field(default_factory=dict)
    required_files: tuple[str, ...] = ()
    optional_files: tuple[str, ...] = _OPTIONAL_FILES
    #: The weights files it can run from, best first; one of them is fetched.
    weights: tuple[str, ...] = ()
    compatibility: Compatibility = field(default_factory=Compatibility)
    pooling: str = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    space: str = ""
    revision: str = "main"
    languages: tuple[str, ...] = ("en",)
    description: str = ""
    allow_pickle: bool = False
    #: The publisher's flag: its newest revision fixes a security problem, so
    #: the ``security`` update strategy installs it without waiting for anyone.
    security_update: bool = False
    bundled: bool = False
    #: Named prompts (sentence-transformers' ``prompts``), beside the model's
    #: own; ``query_prefix``/``passage_prefix`` are the prompts ``query`` and
    #: ``passage``. ``embed(prompt_name=...)`` picks one.
    prompts: Mapping[str, str] = field(default_factory=dict)
    #: The repository's ONNX graphs, when known (``load(..., onnx_file=...)``).
    onnx_variants: tuple[str, ...] = ()
    #: What the model is for: embedding (``load``), rerank (``load_reranker``;
    #: dimensions = labels) or sparse (``load_sparse``; dimensions = vocabulary).
    task: str = "embedding"

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        check_name(self.name)
        if self.task not in TASKS:
            raise ValueError(f"{where}: task {self.task!r}; choose one of: {', '.join(TASKS)}")
        if not is_repo_id(self.model_id):
            raise ValueError(f"{where}: model_id {self.model_id!r} is not 'org/name'")
        if not is_revision(self.revision):
            raise ValueError(f"{where}: revision {self.revision!r} is not a branch, tag or commit")
        if self.dimensions <= 0 or self.max_sequence_length <= 0:
            raise ValueError(f"{where}: dimensions and max_sequence_length must be positive")
        if self.pooling not in ("mean", "cls", "max"):
            raise ValueError(f"{where}: pooling {self.pooling!r}; choose one of: mean, cls, max")
        for path, digest in self.checksums.items():
            check_repo_path(path)
            if not is_sha256(digest):
                raise ValueError(f"{where}: checksum for {path!r} is not 64 lowercase hex digits")
        for path in (*self.required_files, *self.optional_files, *self.weights):
            check_repo_path(path)
        object.__setattr__(self, "model_type", ModelType(self.model_type))
        object.__setattr__(self, "checksums", MappingProxyType(dict(self.checksums)))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.prompts.items()):
            raise ValueError(f"{where}: prompts must map names to strings")
        object.__setattr__(self, "prompts", MappingProxyType(dict(self.prompts)))
        if not self.weights:
            default = _WEIGHTS.get(self.model_type) or runnable_weights(self.task)
            object.__setattr__(self, "weights", default)
        if not self.required_files:
            object.__setattr__(self, "required_files", (*_COMMON_FILES, *_ST_FILES))
        if not self.space:
            object.__setattr__(self, "space", self.model_id)

    @property
    def all_prompts(self) -> dict[str, str]:
        """``prompts`` with the query/passage prefixes as the prompts of those names."""
        prefixes = {"query": self.query_prefix, "passage": self.passage_prefix}
        return {**{k: v for k, v in prefixes.items() if v}, **self.prompts}

    @property
    def weights_file(self) -> str:
        """The preferred weights file."""
        return self.weights[0]

    def choose_weights(self, available: Iterable[str]) -> str | None:
        """The best weights file among ``available`` (a listing, a folder)."""
        have = set(available)
        return next((p for p in self.weights if p in have), None)

    @property
    def pinned(self) -> bool:
        """The revision is a full commit hash, so the files can never change."""
        return is_commit(self.revision)

    def check_safe(self, allow_pickle: bool = False) -> None:
        """Refuse pickle weights unless allowed here or in the spec."""
        unsafe = [p for p in (*self.required_files, *self.weights[:1]) if is_pickle(p)]
        if unsafe and not (allow_pickle or self.allow_pickle):
            raise UnsafeModel(
                f"model {self.name!r} ({self.model_id}) needs pickle weights {', '.join(unsafe)}, "
                "which can run arbitrary code when loaded. Use an ONNX or safetensors variant "
                "(model_type: onnx or safetensors), or set download.allow_pickle: true "
                "if you trust this repository.",
                model=self.name,
                files=unsafe,
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Compatibility):
                value = {
                    "min_onnxruntime": value.min_onnxruntime,
                    "onnx_opset": value.onnx_opset,
                    "platforms": list(value.platforms),
                }
            out[f.name] = value
        return out


_SPEC_FIELDS = {f.name: f for f in fields(ModelSpec)}
_USER_FIELDS = [n for n in _SPEC_FIELDS if n not in ("name", "bundled", "onnx_variants")]


def spec_from_mapping(name: str, raw: Mapping[str, Any], *, where: str = "") -> ModelSpec:
    """A user's model entry (``caxton.yaml`` ``models:`` or the API). Unknown keys
    and bad values are a :class:`ConfigError` naming the key."""
    where = where or f"model {name!r}"
    kwargs: dict[str, Any] = {"name": name}
    for key, value in raw.items():
        if key not in _USER_FIELDS:
            close = difflib.get_close_matches(str(key), _USER_FIELDS, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{key}'.{hint} Valid keys: {', '.join(_USER_FIELDS)}.",
                key=str(key),
                file=where,
                choices=_USER_FIELDS,
            )
        kwargs[key] = value
    if "model_id" not in kwargs:
        raise ConfigError(
            f"{where}: 'model_id' is required (e.g. org/name on the Hub)",
            key="model_id",
            file=where,
        )
    kwargs.setdefault("model_type", "onnx")
    kwargs.setdefault("architecture", "unknown")
    kwargs.setdefault("max_sequence_length", 512)
    kwargs.setdefault("size_mb", 0.0)
    if "dimensions" not in kwargs:
        raise ConfigError(f"{where}: 'dimensions' is required", key="dimensions", file=where)
    try:
        if "model_type" in kwargs:
            try:
                kwargs["model_type"] = ModelType(kwargs["model_type"])
            except ValueError:
                choices = [t.value for t in ModelType]
                raise ConfigError(
                    f"{where}: bad value for 'model_type': {kwargs['model_type']!r}; "
                    f"choose one of: {', '.join(choices)}",
                    key="model_type",
                    file=where,
                    choices=choices,
                ) from None
        for key in ("required_files", "optional_files", "weights", "languages"):
            if key in kwargs:
                if not isinstance(kwargs[key], list) or not all(
                    isinstance(v, str) for v in kwargs[key]
                ):
                    raise ValueError(f"'{key}' must be a list of strings")
                kwargs[key] = tuple(kwargs[key])
        if "checksums" in kwargs and not isinstance(kwargs["checksums"], dict):
            raise ValueError("'checksums' must be a mapping of file -> sha256")
        if "prompts" in kwargs and not isinstance(kwargs["prompts"], dict):
            raise ValueError("'prompts' must be a mapping of name -> prompt text")
        if "compatibility" in kwargs:
            comp = kwargs["compatibility"]
            if not isinstance(comp, dict):
                raise ValueError("'compatibility' must be a mapping")
            comp = dict(comp)
            comp["platforms"] = tuple(comp.get("platforms", ()))
            kwargs["compatibility"] = Compatibility(**comp)
        for key, typ in (("dimensions", int), ("max_sequence_length", int)):
            if isinstance(kwargs[key], bool) or not isinstance(kwargs[key], typ):
                raise ValueError(f"'{key}' must be a whole number")
        for key in ("normalize", "allow_pickle", "security_update"):
            if key in kwargs and not isinstance(kwargs[key], bool):
                raise ValueError(f"'{key}' must be true or false")
        return ModelSpec(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}", key=name, file=where) from None


# --------------------------------------------------------------------------- built-ins

_MINILM_REV = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# SHA-256 of the files at that revision (they match ../shared/models/all-MiniLM-L6-v2/
# SHA256SUMS). onnx/model.onnx is absent on purpose: it is recorded at first
# download (the Hub's LFS hash), not guessed.
_MINILM_SUMS = {
    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": (
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    ),
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
MINILM_SPACE = "sentence-transformers/all-MiniLM-L6-v2"
#: Files rerankers and sparse encoders may have besides config and tokenizer.
_TASK_OPTIONAL_FILES = (
    *_OPTIONAL_FILES,
    "modules.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="all-MiniLM-L6-v2",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        model_type=ModelType.ONNX,
        architecture="bert",
        dimensions=384,
        max_sequence_length=256,
        size_mb=23,
        checksums=_MINILM_SUMS,
        revision=_MINILM_REV,
        space=MINILM_SPACE,
        description="Default: general-purpose English embeddings, fast on CPU.",
    ),
    ModelSpec(
        name="all-mpnet-base-v2",
        model_id="sentence-transformers/all-mpnet-base-v2",
        model_type=ModelType.SAFETENSORS,
        architecture="mpnet",
        dimensions=768,
        max_sequence_length=384,
        size_mb=438,
        description="Higher-quality English embeddings.",
    ),
    ModelSpec(
        name="multilingual-e5-small",
        model_id="intfloat/multilingual-e5-small",
        model_type=ModelType.ONNX,
        architecture="bert",
        dimensions=384,
        max_sequence_length=512,
        size_mb=118,
        query_prefix="query: ",
        passage_prefix="passage: ",
        languages=("multilingual",),
        description="100+ languages; inputs need 'query: ' / 'passage: ' prefixes.",
    ),
    ModelSpec(
        name="msmarco-distilbert-base-v4",
        model_id="sentence-transformers/msmarco-distilbert-base-v4",
        model_type=ModelType.ONNX,
        architecture="distilbert",
        dimensions=768,
        max_sequence_length=512,
        size_mb=268,
        description="Passage retrieval trained on MS MARCO.",
    ),
    ModelSpec(
        name="paraphrase-multilingual-mpnet-base-v2",
        model_id="sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
        model_type=ModelType.ONNX,
        architecture="xlm-roberta",
        dimensions=768,
        max_sequence_length=128,
        size_mb=278,
        languages=("multilingual",),
        description="Multilingual semantic similarity and duplicate detection.",
    ),
    ModelSpec(
        name="code-search-net",
        model_id="flax-sentence-embeddings/st-codesearch-distilroberta-base",
        model_type=ModelType.SAFETENSORS,
        architecture="roberta",
        dimensions=768,
        max_sequence_length=128,
        size_mb=492,
        languages=("code",),
        description="Code search, trained on CodeSearchNet.",
    ),
    ModelSpec(
        name="all-MiniLM-L12-v2",
        model_id="sentence-transformers/all-MiniLM-L12-v2",
        model_type=ModelType.ONNX,
        architecture="bert",
        dimensions=384,
        max_sequence_length=128,
        size_mb=133,
        description="Fallback: same architecture as the default, 12 layers.",
    ),
    ModelSpec(
        name="distiluse-base-multilingual-cased",
        model_id="sentence-transformers/distiluse-base-multilingual-cased-v2",
        model_type=ModelType.ONNX,
        architecture="distilbert",
        dimensions=512,
        max_sequence_length=128,
        size_mb=539,
        required_files=(
            *_COMMON_FILES,
            *_ST_FILES,
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
        ),
        normalize=False,
        languages=("multilingual",),
        description="Fallback: multilingual, 768->512 dense projection after pooling.",
    ),
    ModelSpec(
        name="bundled-mini",
        model_id="caxton/bundled-mini",
        model_type=ModelType.ONNX,
        architecture="bert",
        dimensions=384,
        max_sequence_length=256,
        size_mb=0,
        space=MINILM_SPACE,
        bundled=True,
        description="Shipped in the package, in the default model's embedding space; offline.",
    ),
    # Rerankers and sparse encoders (caxton_models.load_reranker / load_sparse).
    # Unpinned, like the entries above without checksums: the commit of "main"
    # and the Hub's LFS SHA-256 are recorded at first download, then enforced.
    ModelSpec(
        name="ms-marco-MiniLM-L6-v2",
        model_id="cross-encoder/ms-marco-MiniLM-L6-v2",
        model_type=ModelType.SAFETENSORS,
        architecture="bert",
        dimensions=1,
        max_sequence_length=512,
        size_mb=91,
        required_files=_COMMON_FILES,
        optional_files=_TASK_OPTIONAL_FILES,
        weights=("model.safetensors",),
        task="rerank",
        description="Reranker: English passages, MS MARCO; CrossEncoder returns its logits.",
    ),
    ModelSpec(
        name="bge-reranker-v2-m3",
        model_id="BAAI/bge-reranker-v2-m3",
        model_type=ModelType.SAFETENSORS,
        architecture="xlm-roberta",
        dimensions=1,
        max_sequence_length=8192,
        size_mb=2271,
        required_files=_COMMON_FILES,
        optional_files=_TASK_OPTIONAL_FILES,
        weights=("model.safetensors",),
        languages=("multilingual",),
        task="rerank",
        description="Reranker: multilingual, long inputs; scores through a sigmoid.",
    ),
    ModelSpec(
        name="splade-cocondenser-ensembledistil",
        model_id="naver/splade-cocondenser-ensembledistil",
        model_type=ModelType.SAFETENSORS,
        architecture="bert",
        dimensions=30522,
        max_sequence_length=512,
        size_mb=438,
        required_files=_COMMON_FILES,
        optional_files=(*_TASK_OPTIONAL_FILES, "1_SpladePooling/config.json"),
        weights=("model.safetensors",),
        task="sparse",
        description="SPLADE sparse vectors (English, BERT vocabulary ids), for hybrid search.",
    ),
)


class Registry:
    """Name -> :class:`ModelSpec`; built-ins first, then the user's models
    (``caxton.yaml`` or :meth:`add`), which may replace a built-in."""

    def __init__(self, specs: Iterable[ModelSpec] = BUILTIN_MODELS) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec

    @classmethod
    def from_config(
        cls, models: Mapping[str, Mapping[str, Any]], where: str = "caxton.yaml"
    ) -> Registry:
        reg = cls()
        for name, raw in models.items():
            reg.add(spec_from_mapping(name, raw, where=f"{where}: models.{name}"))
        return reg

    def add(self, spec: ModelSpec) -> None:
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        for s in self._specs.values():  # also accept the Hub id
            if s.model_id == name:
                return s
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelNotFound(
            f"unknown model {name!r}.{hint} Known models: {', '.join(self.names())}. "
            "Add your own under 'models:' in caxton.yaml or with Registry.add().",
            model=name,
            suggestions=close,
        )

    def with_revision(self, name: str, revision: str) -> ModelSpec:
        return replace(self.get(name), revision=revision)
