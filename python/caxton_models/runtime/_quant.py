"""The int8 recipe: which MatMuls of a float32 ONNX graph become int8, and how
their activations are quantised, so that the int8 model keeps the float32
model's embedding space.

Measured on all-MiniLM-L6-v2 (the last row: all-mpnet-base-v2) against its own
float32 graph (cosine of the pooled, normalised vectors; 1,000 PyPI summaries /
150 Python-docs passages where the row gives no other count; AMD EPYC, AVX2, no
VNNI, except the rows measured with onnxruntime 1.32 on an AMD EPYC with AVX-512
and VNNI):

===============================================  ===============  ===============
recipe                                           PyPI min / mean  docs min / mean
===============================================  ===============  ===============
every op onnxruntime quantises (incl. Gather)    0.958 / 0.9921   0.983 / 0.9924
MatMul only, per-channel weights                 0.964 / 0.9926   0.976 / 0.9925
  + reduce_range (7-bit weights)                 0.960 / 0.9920   0.978 / 0.9922
  + SmoothQuant (alpha 0.5) scales               0.934 / 0.9831   0.956 / 0.9784
MatMul only, per-channel, per-row activations    0.980 / 0.9967   0.991 / 0.9966
  + value projections float32 (3,000 / 400)      0.988 / 0.9981   0.995 / 0.9980
  + attention output float32 too (3,000 / 400)   0.988 / 0.9983   0.995 / 0.9982
    + reduce_range (1,500 / 200)                 0.990 / 0.9980   0.992 / 0.9978
Re-measured with onnxruntime 1.32, all 10,000 / 1,404 texts:
per-row symmetric, value and output float32      0.991 / 0.9989   0.997 / 0.9990
per-row asymmetric (row min to max), all MatMul  0.991 / 0.9990   0.997 / 0.9990
  + value and output projections float32         0.995 / 0.9994   0.998 / 0.9995
all-mpnet-base-v2 (MPNet), the same recipe       0.992 / 0.9989   0.996 / 0.9989
Fused (MatMulIntegerToFloat), value/output float32, AVX-512 and VNNI:
symmetric rows, GELU outputs shifted, from 0     0.993 / 0.9991   0.997 / 0.9992
  + other rows min to max, integer zero point    0.995 / 0.9994   0.998 / 0.9994
MPNet, the same (PyPI: first 2,000)              0.992 / 0.9988   0.996 / 0.9989
Only the value projections float32 (the recipe)  0.995 / 0.9994   0.998 / 0.9994
MPNet, the same (PyPI: first 2,000)              0.994 / 0.9988   0.996 / 0.9989
===============================================  ===============  ===============

onnxruntime's dynamic quantisation gives the whole activation tensor one
scale: a batch's largest value (a [CLS]/[SEP] token's outlier channel, a long
text beside short ones) sets the step for every token. One scale per row
(per token) removes most of the error; SmoothQuant (moving the activation
range into the per-channel weights) costs more than it saves.
Quantising one projection kind at a time, the value projections cost the
most (PyPI mean 0.9986, against 0.9995-0.9997 for query+key, attention
output, FFN up or FFN down; weights alone, activations float32: 0.9996).
A symmetric row scale spends half its levels on values a row does not have
(a GELU output, the FFN down projection's input, is never under -0.17): the
row's own min to max halves the step, and the error with it (the asymmetric
rows). The value projections stay float32, 1/12 of the MatMul work: with
them int8 too the min still passes (0.9914 on the PyPI summaries, unfused) with
almost no margin, so they keep it. The attention output projection, float32
in earlier recipes, costs nothing measurable once the rows are asymmetric (the
last two rows against the two before), and as int8 the embedding runs 7.7%
faster (median of 11 interleaved rounds of 2,000 PyPI summaries through
``Embedder``, every round 1.04x or more).

Each int8 MatMul is one ``MatMulIntegerToFloat``, which applies the row scale
and the per-channel weight scale to the integer product itself; the ops
around it are what the row scales need: a reduction or two per activation,
one per-axis QuantizeLinear, and for a two-sided row ``s z`` times the
weight's column sums taken off the product. A GELU output's shift costs
nothing after the MatMul: 0.17 times the column sums goes into the bias.
Against the unfused asymmetric rows (integer MatMul, then a cast and four
float ops per output), the same accuracy runs 3-6% faster (MiniLM, batches of
32x20, 32x50 and 8x200 tokens, medians of 15 interleaved rounds, AMD EPYC
with AVX-512 and VNNI); symmetric rows everywhere ran another 6% faster but
left MPNet's mean at 0.9984, too near the 0.998 bar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models.runtime._rowquant import consumers_of, row_quantized_matmuls

log = logging.getLogger("caxton_models.runtime")

__all__ = [
    "INT8_RECIPE",
    "Int8Recipe",
    "quantize",
    "value_projections",
]


@dataclass(frozen=True)
class Int8Recipe:
    """How a graph is made int8. ``key`` names it in the graph cache: a
    graph made by another recipe is never reused."""

    key: str
    ops: str = "MatMul only"
    weights: str = "int8 per output channel, symmetric"
    activations: str = (
        "uint8 per row (token), computed per call: a GELU output shifted by 0.17 from 0 to "
        "the row's max, any other from the row's min to max with an integer zero point"
    )
    reduce_range: bool = False
    fp32: tuple[str, ...] = (
        "attention value projections",
        "embeddings",
        "LayerNorm",
        "GELU",
        "softmax",
    )
    measured: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        text = (f"{self.ops}, weights {self.weights}, activations {self.activations}"
                f"{', reduce_range' if self.reduce_range else ''}; "
                f"float32: {', '.join(self.fp32)}")  # fmt: skip
        if self.measured:
            text += " (" + "; ".join(f"{k}: {v}" for k, v in self.measured.items()) + ")"
        return text

    def note(self) -> dict[str, Any]:
        """What the graph cache records beside a graph made by this recipe."""
        return {"int8_recipe": self.key, "description": self.describe()}


#: One recipe for every family, its float32 projections found from the
#: graph's structure, not by name. Measured on MiniLM (BERT) and
#: all-mpnet-base-v2 (MPNet, from its safetensors), both held to issue 24's bar
#: by the tests; the tiny Qwen3/Gemma3 fixtures are held to min cosine 0.98.
#: Other families (RoBERTa, XLM-R, ModernBERT) are not measured yet.
INT8_RECIPE = Int8Recipe(
    key="mm-pc-rowasym-gelu-fused-v32-4",
    measured={
        "all-MiniLM-L6-v2 vs float32, 10,000 PyPI summaries": "min 0.995 mean 0.9994",
        "1,404 Python-docs passages": "min 0.998 mean 0.9994",
        "all-mpnet-base-v2, 2,000 PyPI / docs": "min 0.994 / 0.996, mean 0.9988 / 0.9989",
    },
)


def _const_matmuls(model: Any) -> Iterator[Any]:
    shapes = {i.name: len(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "MatMul" and shapes.get(n.input[1]) == 2:
            yield n


#: Ops a projection's output passes through on its way into attention.
_PASS_THROUGH = frozenset(
    {"Add", "Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Concat", "Tile", "Cast"}
)


def _after_softmax(name: str, producers: dict[str, Any]) -> bool:
    node = producers.get(name)
    for _ in range(3):  # the softmax, or a Cast / Where behind it
        if node is None:
            return False
        if node.op_type == "Softmax":
            return True
        node = producers.get(node.input[0]) if node.input else None
    return False


def _reaches_attention_value(
    start: str, consumers: dict[str, list[Any]], producers: dict[str, Any], max_hops: int
) -> bool:
    frontier, seen = [start], set()
    for _ in range(max_hops):
        nxt = []
        for value in frontier:
            for c in consumers.get(value, []):
                if c.op_type == "MatMul" and c.input[1] == value:
                    if _after_softmax(c.input[0], producers):
                        return True
                elif c.op_type in _PASS_THROUGH and c.name not in seen:
                    seen.add(c.name)
                    nxt.extend(c.output)
        if not nxt:
            return False
        frontier = nxt
    return False


def value_projections(model: Any, max_hops: int = 8) -> list[str]:
    """MatMuls with a constant weight whose output reaches the second operand
    of ``softmax(QK^T) @ V`` through reshapes, transposes and bias adds only:
    the attention value projections."""
    consumers = consumers_of(model.graph)
    producers = {o: n for n in model.graph.node for o in n.output}
    return [
        mm.name
        for mm in _const_matmuls(model)
        if _reaches_attention_value(mm.output[0], consumers, producers, max_hops)
    ]


def _gemms_as_matmuls(model: Any) -> None:
    """``Gemm(x, W, b)`` with a constant ``W`` (what our graph builders write
    for a linear layer) as ``MatMul(x, W') + b``: onnxruntime's dynamic
    quantiser makes MatMuls int8, not Gemms."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if n.op_type != "Gemm" or n.input[1] not in inits or attrs.get("transA") or not plain:
            nodes.append(n)
            continue
        w = inits[n.input[1]]
        if attrs.get("transB"):
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
        has_bias = len(n.input) > 2 and n.input[2]
        mm_out = n.output[0] + "_mm" if has_bias else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], w.name], [mm_out], name=n.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]],
                                          name=n.name + "_bias"))  # fmt: skip
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _save(model: Any, dest: Path) -> None:
    import onnx

    # Weights apart, so that a model past protobuf's 2 GB limit saves too.
    for f in dest.parent.glob(dest.name + "*"):
        f.unlink()
    onnx.save_model(model, str(dest), save_as_external_data=True,
                    location=dest.name + ".data", size_threshold=1024)  # fmt: skip


def quantize(src: Path, dest: Path, exclude: Sequence[str] | None = None) -> None:
    """``src`` made int8 by :data:`INT8_RECIPE`, written to ``dest`` (an
    intermediate: ``ort_optimize`` makes the cached graph). ``exclude``
    (default: the attention value projections) stays float32."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from caxton_models.runtime._ortsave import ort_save

    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".caxton-int8") as tmp:
        # onnxruntime's basic optimiser saves the file its quantiser reads:
        # a graph built from safetensors points into a hard link of the
        # model's weights, which the onnx package refuses to load.
        pre = Path(tmp) / "pre.onnx"
        ort_save(src, pre, extended=False)
        model = onnx.load(str(pre))
        _gemms_as_matmuls(model)
        if exclude is None:
            exclude = value_projections(model)
        _save(model, pre)
        del model
        # quantize_dynamic logs advice about pre-processing on the root logger.
        quiet = _DropRecords("pre-processing before quantization")
        root = logging.getLogger()
        root.addFilter(quiet)
        try:
            quantize_dynamic(
                pre,
                dest,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=INT8_RECIPE.reduce_range,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=list(exclude),
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.removeFilter(quiet)
    _save(row_quantized_matmuls(onnx.load(str(dest))), dest)


class _DropRecords(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()
