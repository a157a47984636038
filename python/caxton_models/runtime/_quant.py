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
rows). The value and attention output projections stay float32, 1/6 of the
MatMul work: the last row, the recipe, whose min stays over 0.99 on the
short PyPI summaries with room to spare; quantising them too still passes
(min 0.9914) with almost none, so they keep the margin. The extra row ops cost
about 7% of int8 throughput (sym/asym time 0.93, median of 7 interleaved
rounds of 2,000 PyPI summaries).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("caxton_models.runtime")

__all__ = [
    "INT8_RECIPE",
    "Int8Recipe",
    "per_row_activations",
    "quantize",
    "value_and_output_projections",
]


@dataclass(frozen=True)
class Int8Recipe:
    """How a graph is made int8. ``key`` names it in the graph cache: a
    graph made by another recipe is never reused."""

    key: str
    ops: str = "MatMul only"
    weights: str = "int8 per output channel, symmetric"
    activations: str = "uint8 per row (token), asymmetric (the row's min to max), computed per call"
    reduce_range: bool = False
    fp32: tuple[str, ...] = (
        "attention value and output projections",
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
    key="mm-pc-rowasym-vo32-2",
    measured={
        "all-MiniLM-L6-v2 vs float32, 10,000 PyPI summaries": "min 0.995 mean 0.9994",
        "1,404 Python-docs passages": "min 0.998 mean 0.9995",
        "all-mpnet-base-v2, PyPI / docs": "min 0.992 / 0.996, mean 0.9989 / 0.9989",
    },
)


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


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


def _after_attention(name: str, producers: dict[str, Any], max_hops: int) -> bool:
    node = producers.get(name)
    for _ in range(max_hops):
        if node is None or not node.input:
            return False
        if node.op_type == "MatMul":
            return _after_softmax(node.input[0], producers)
        if node.op_type not in _PASS_THROUGH:
            return False
        node = producers.get(node.input[0])
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


def value_and_output_projections(model: Any, max_hops: int = 8) -> list[str]:
    """MatMuls with a constant weight on either side of ``softmax(QK^T) @ V``:
    the value projection (its output reaches that MatMul's second operand
    through reshapes, transposes and bias adds only) and the attention output
    projection (its input comes from that MatMul the same way)."""
    consumers = _consumers(model.graph)
    producers = {o: n for n in model.graph.node for o in n.output}
    return [
        mm.name
        for mm in _const_matmuls(model)
        if _reaches_attention_value(mm.output[0], consumers, producers, max_hops)
        or _after_attention(mm.input[0], producers, max_hops)
    ]


def _row_scaled_muls(graph: Any, consumers: dict[str, list[Any]]) -> dict[str, tuple[str, Any]]:
    """For each DynamicQuantizeLinear: the float Mul that ends each of its
    ``MatMulInteger -> Cast -> Mul`` chains, by output name -> (the quantised
    activation's name, the MatMulInteger). Anything else is a graph this
    rewrite does not know."""
    from caxton_models.errors import InvalidModelFormat

    ends: dict[str, tuple[str, Any]] = {}
    for n in graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            continue
        for mm in consumers.get(n.output[0], []):
            chain = [mm]
            for op in ("Cast", "Mul"):
                nxt = consumers.get(chain[-1].output[0], [])
                if len(nxt) != 1 or nxt[0].op_type != op:
                    raise InvalidModelFormat(
                        f"int8 graph: {mm.name} is not followed by {op}; load without quantize=True"
                    )
                chain.append(nxt[0])
            if mm.op_type != "MatMulInteger":
                raise InvalidModelFormat(f"int8 graph: {mm.name} is a {mm.op_type}")
            ends[chain[-1].output[0]] = (n.output[0], mm)
    return ends


#: Activations are ``round((x - m) / s)`` with ``m = min x_row`` and ``s = (max x_row
#: - m) / ACT_LEVELS``: every row uses all 256 levels. Without VNNI onnxruntime's uint8
#: x int8 kernel (AVX2 vpmaddubsw) adds products in pairs into int16, which saturates
#: past 32767 when two neighbouring activations and weights are all near their
#: maximum; 7-bit activations never saturate, but measured worse on MiniLM (with
#: symmetric rows, PyPI min / mean 0.979 / 0.9966 against 0.988 / 0.9983): rare
#: saturation costs less than halving every row's resolution.
ACT_LEVELS = 255
ACT_ZERO_POINT = 0


def per_row_activations(model: Any) -> Any:
    """Turns onnxruntime's dynamic quantisation (one scale per activation
    tensor) into one asymmetric scale per row: ``q = round((x - m) / s)`` with
    ``m = min x_row`` and ``s = (max x_row - m) / 255``, and after the integer
    MatMul ``s`` times the result plus ``m`` times the column sums of the
    (dequantised) weight. A symmetric scale (``max|x_row| / 127`` around 128)
    leaves a GELU output, the FFN down projection's input and never under
    -0.17, half the levels; this gives it all of them. onnxruntime's fused int8
    MatMul takes a scalar activation scale and zero point, so the graph hands it
    1 and 0 and applies ``s`` and ``m`` itself."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    new_reduce = _opset(model) >= 18  # ReduceMax takes its axes as an input from opset 18
    consts: dict[str, Any] = {
        "_rowq_zero_point": np.array(ACT_ZERO_POINT, np.uint8),
        "_rowq_one": np.array(1.0, np.float32),
        "_rowq_inv_levels": np.array(1.0 / ACT_LEVELS, np.float32),
        "_rowq_tiny": np.array(1e-12, np.float32),
    }
    if new_reduce:
        consts["_rowq_last_axis"] = np.array([-1], np.int64)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    inits = {t.name: t for t in g.initializer}
    ends = _row_scaled_muls(g, _consumers(g))

    def reduce(op: str, x: str, out: str) -> Any:
        if new_reduce:
            return helper.make_node(op, [x, "_rowq_last_axis"], [out])
        return helper.make_node(op, [x], [out], axes=[-1])

    nodes = []
    for n in g.node:
        if n.op_type == "DynamicQuantizeLinear":
            x, (q, s, z) = n.input[0], n.output
            p = q
            nodes += [
                reduce("ReduceMax", x, p + "_max"),
                reduce("ReduceMin", x, p + "_min"),
                helper.make_node("Sub", [p + "_max", p + "_min"], [p + "_range"]),
                helper.make_node("Mul", [p + "_range", "_rowq_inv_levels"], [p + "_s"]),
                # a constant row (padding) must not divide by zero
                helper.make_node("Max", [p + "_s", "_rowq_tiny"], [p + "_row_scale"]),
                helper.make_node("Sub", [x, p + "_min"], [p + "_shifted"]),
                helper.make_node("Div", [p + "_shifted", p + "_row_scale"], [p + "_x"]),
                helper.make_node(
                    "QuantizeLinear", [p + "_x", "_rowq_one", "_rowq_zero_point"], [q]
                ),
                helper.make_node("Identity", ["_rowq_one"], [s]),
                helper.make_node("Identity", ["_rowq_zero_point"], [z]),
            ]
        elif n.output and n.output[0] in ends:
            q, mm = ends[n.output[0]]
            out = n.output[0]
            n.output[0] = out + "_unscaled"
            sums = out + "_colsum"
            g.initializer.append(numpy_helper.from_array(_column_sums(mm, inits), sums))
            nodes += [
                n,
                helper.make_node("Mul", [out + "_unscaled", q + "_row_scale"], [out + "_rs"]),
                helper.make_node("Mul", [q + "_min", sums], [out + "_shift"]),
                helper.make_node("Add", [out + "_rs", out + "_shift"], [out]),
            ]
        else:
            nodes.append(n)
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"_rowq_{i}"
    del g.node[:]
    g.node.extend(nodes)
    return model


def _column_sums(mm: Any, inits: dict[str, Any]) -> Any:
    """The column sums of ``mm``'s dequantised int8 weight: what a row shifted
    by ``m`` lost from its product, ``m`` times each."""
    import numpy as np
    from onnx import numpy_helper

    from caxton_models.errors import InvalidModelFormat

    w_name = mm.input[1]
    base = w_name.removesuffix("_quantized")
    try:
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        zp = numpy_helper.to_array(inits[mm.input[3]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[base + "_scale"]).astype(np.float32)
    except (KeyError, IndexError):
        raise InvalidModelFormat(
            f"int8 graph: the weight scale of {mm.name} is not where onnxruntime puts it"
        ) from None
    return ((w - zp) * scale).sum(axis=0).astype(np.float32)


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


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
    (default: the attention value and output projections) stays float32."""
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
            exclude = value_and_output_projections(model)
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
    _save(per_row_activations(onnx.load(str(dest))), dest)


class _DropRecords(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()
