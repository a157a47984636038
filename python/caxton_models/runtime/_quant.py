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

log = logging.getLogger("caxton_models.runtime")

__all__ = [
    "INT8_RECIPE",
    "Int8Recipe",
    "quantize",
    "row_quantized_matmuls",
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
    consumers = _consumers(model.graph)
    producers = {o: n for n in model.graph.node for o in n.output}
    return [
        mm.name
        for mm in _const_matmuls(model)
        if _reaches_attention_value(mm.output[0], consumers, producers, max_hops)
    ]


#: Activations use all 256 levels of uint8. Without VNNI onnxruntime's uint8 x int8
#: kernel (AVX2 vpmaddubsw) adds products in pairs into int16, which saturates
#: past 32767 when two neighbouring activations and weights are all near their
#: maximum; 7-bit activations never saturate, but measured worse on MiniLM (with
#: symmetric rows, PyPI min / mean 0.979 / 0.9966 against 0.988 / 0.9983): rare
#: saturation costs less than halving every row's resolution.
ACT_LEVELS = 255


@dataclass
class _Chain:
    """onnxruntime's ``MatMulInteger -> Cast -> Mul(a_scale * w_scale)`` for
    one weight: what the rewrite replaces with one MatMulIntegerToFloat."""

    matmul: Any
    drop: list[Any]
    output: str


def _chains(dql: Any, consumers: dict[str, list[Any]], producers: dict[str, Any]) -> list[_Chain]:
    """The chains fed by one DynamicQuantizeLinear. Anything else is a graph
    this rewrite does not know."""
    from caxton_models.errors import InvalidModelFormat

    chains = []
    for mm in consumers.get(dql.output[0], []):
        if mm.op_type != "MatMulInteger":
            raise InvalidModelFormat(f"int8 graph: {mm.name} is a {mm.op_type}")
        chain = [mm]
        for op in ("Cast", "Mul"):
            nxt = consumers.get(chain[-1].output[0], [])
            if len(nxt) != 1 or nxt[0].op_type != op:
                raise InvalidModelFormat(
                    f"int8 graph: {mm.name} is not followed by {op}; load without quantize=True"
                )
            chain.append(nxt[0])
        scale = next(
            (
                producers[i]
                for i in chain[-1].input
                if i in producers
                and producers[i].op_type == "Mul"
                and dql.output[1] in producers[i].input
            ),
            None,
        )
        chains.append(
            _Chain(mm, chain + ([scale] if scale is not None else []), chain[-1].output[0])
        )
    return chains


#: Ops a GELU is written with in an exported graph: ``x * 0.5 * (1 + erf(x /
#: sqrt 2))``, or the tanh form with ``x ** 3``.
_GELU_PARTS = frozenset({"Mul", "Add", "Div", "Erf", "Tanh", "Pow", "Sqrt"})
_GELU_OPS = frozenset({"Gelu", "FastGelu", "BiasGelu"})


def _walk(
    name: str, stop: str | None, producers: dict[str, Any], constants: set[str]
) -> tuple[set[str], bool, dict[str, int], bool]:
    """Up from ``name`` through GELU parts, not past ``stop``: the non-constant
    values where it ends, whether it met erf or tanh, how many nodes of the
    walk use each value, and whether it ended within its bound."""
    leaves: set[str] = set()
    uses: dict[str, int] = {}
    seen: set[str] = set()
    curved, frontier = False, [name]
    while frontier:
        value = frontier.pop()
        node = producers.get(value)
        if value in constants or (node is not None and node.op_type == "Constant"):
            continue
        if value == stop or node is None or node.op_type not in _GELU_PARTS:
            leaves.add(value)
        elif node.name not in seen:
            if len(seen) == 32:  # longer than any GELU
                return leaves, curved, uses, False
            seen.add(node.name)
            curved |= node.op_type in ("Erf", "Tanh")
            for i in node.input:
                uses[i] = uses.get(i, 0) + 1
            frontier.extend(node.input)
    return leaves, curved, uses, True


def _gelu_output(name: str, producers: dict[str, Any], constants: set[str]) -> bool:
    """Whether ``name`` is GELU(x) of a single tensor x: some x that the
    expression uses more than once (``x * (1 + erf(x / sqrt 2)) / 2``, or the
    tanh form) is, with the constants, all it is made of, through erf or tanh.
    A gated GELU (``gelu(gate) * up``: Gemma's, GeGLU) also takes ``up``."""
    node = producers.get(name)
    if node is not None and node.op_type in _GELU_OPS:
        return True
    _, _, uses, _ = _walk(name, None, producers, constants)
    for x in (v for v, n in uses.items() if n > 1):
        leaves, curved, _, complete = _walk(name, x, producers, constants)
        if complete and curved and leaves == {x}:
            return True
    return False


def _foldable_bias(out: str, consumers: dict[str, list[Any]], inits: dict[str, Any]) -> Any:
    """The ``Add(out, bias)`` right after a projection, with a constant 1-D
    bias, else None."""
    users = consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    other = [i for i in users[0].input if i != out]
    if len(other) != 1 or other[0] not in inits or len(inits[other[0]].dims) != 1:
        return None
    return users[0]


#: GELU's least value is -0.16997 (at x = -0.75): a GELU output plus this is
#: never negative, so its rows are quantised from 0 up, with every level.
GELU_FLOOR = 0.17


def row_quantized_matmuls(model: Any) -> Any:
    """Turns onnxruntime's dynamic quantisation (one scale per activation
    tensor) into one scale per row (token), each MatMul one fused
    ``MatMulIntegerToFloat`` with the row scales and the per-channel weight
    scales applied in its epilogue:

    * a GELU output (the FFN down projection's input) is shifted by
      :data:`GELU_FLOOR` and quantised from 0 to its row's max; the shift
      times the weight's column sums is folded into the projection's bias;
    * any other input is quantised from its row's min to max, ``x ~ s (q -
      z)`` with an integer zero point ``z`` per row, and ``s z`` times the
      column sums is taken off the product.

    A symmetric scale (``max|x_row| / 127``) would leave a one-sided row half
    the levels; onnxruntime's int8 kernels take a scalar activation zero
    point, so the per-row one is applied around them."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    for i, n in enumerate(g.node):  # the rewrite finds nodes by name
        if not n.name:
            n.name = f"_rowq_node_{i}"
    opset = _opset(model)
    consts: dict[str, Any] = {
        "_rowq_u8_zero": np.array(0, np.uint8),
        "_rowq_one": np.array(1.0, np.float32),
        "_rowq_zero": np.array(0.0, np.float32),
        "_rowq_top": np.array(float(ACT_LEVELS), np.float32),
        "_rowq_inv_levels": np.array(1.0 / ACT_LEVELS, np.float32),
        "_rowq_tiny": np.array(1e-12, np.float32),
        "_rowq_gelu_floor": np.array(GELU_FLOOR, np.float32),
        "_rowq_flat": np.array([-1], np.int64),
        "_rowq_last_axis": np.array([-1], np.int64),
    }
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    inits = {t.name: t for t in g.initializer}
    consumers = _consumers(g)
    producers = {o: n for n in g.node for o in n.output}
    constants = set(inits)

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [out], **attrs)

    def reduce(op: str, x: str, out: str) -> Any:
        if opset >= 18:  # the axes became an input
            return node(op, [x, "_rowq_last_axis"], out)
        return node(op, [x], out, axes=[-1])

    def quantize(x: str, p: str, k: int, zero: str | None) -> list[Any]:
        """``clip(round(x / s) + z)`` as uint8, ``s`` and ``z`` per row."""
        if opset < 13:  # no per-axis QuantizeLinear: round(x / s + z) in floats
            shifted = [node("Add", [p + "_xs", zero], p + "_xz")] if zero else []
            return [
                node("Div", [x, p + "_s"], p + "_xs"),
                *shifted,
                node(
                    "QuantizeLinear",
                    [p + ("_xz" if zero else "_xs"), "_rowq_one", "_rowq_u8_zero"],
                    p,
                ),
            ]
        shape = f"_rowq_rows_of_{k}"
        if shape not in inits:
            inits[shape] = numpy_helper.from_array(np.array([-1, k], np.int64), shape)
            g.initializer.append(inits[shape])
        zp = (
            [
                node("Cast", [zero], p + "_z8", to=2),
                node("Reshape", [p + "_z8", "_rowq_flat"], p + "_z1"),
            ]
            if zero
            else []
        )
        return [
            node("Reshape", [p + "_s", "_rowq_flat"], p + "_s1"),
            *zp,
            node("Reshape", [x, shape], p + "_x2"),
            node(
                "QuantizeLinear",
                [p + "_x2", p + "_s1"] + ([p + "_z1"] if zero else []),
                p + "_q2",
                axis=0,
            ),
            node("Shape", [x], p + "_shape"),
            node("Reshape", [p + "_q2", p + "_shape"], p),
        ]

    replaced: dict[str, list[Any]] = {}  # a dropped node's name -> what takes its place
    for dql in [n for n in g.node if n.op_type == "DynamicQuantizeLinear"]:
        x, q = dql.input[0], dql.output[0]
        chains = _chains(dql, consumers, producers)
        if not chains:
            continue
        k = int(inits[chains[0].matmul.input[1]].dims[0])
        biases = [_foldable_bias(c.output, consumers, inits) for c in chains]
        one_sided = _gelu_output(x, producers, constants) and all(b is not None for b in biases)
        if one_sided:
            pre = [
                node("Add", [x, "_rowq_gelu_floor"], q + "_xg"),
                reduce("ReduceMax", q + "_xg", q + "_max"),
                node("Mul", [q + "_max", "_rowq_inv_levels"], q + "_s0"),
                node("Max", [q + "_s0", "_rowq_tiny"], q + "_s"),
                *quantize(q + "_xg", q, k, None),
            ]
        else:
            pre = [
                reduce("ReduceMax", x, q + "_max"),
                reduce("ReduceMin", x, q + "_min"),
                node("Sub", [q + "_max", q + "_min"], q + "_range"),
                node("Mul", [q + "_range", "_rowq_inv_levels"], q + "_s0"),
                # a constant row (padding) must not divide by zero
                node("Max", [q + "_s0", "_rowq_tiny"], q + "_s"),
                node("Div", [q + "_min", q + "_s"], q + "_zneg"),
                node("Neg", [q + "_zneg"], q + "_zf"),
                node("Round", [q + "_zf"], q + "_zr"),
                node("Clip", [q + "_zr", "_rowq_zero", "_rowq_top"], q + "_z"),
                # s z: the row's min as its integer zero point has it
                node("Mul", [q + "_z", q + "_s"], q + "_sz"),
                *quantize(x, q, k, q + "_z"),
            ]
        replaced[dql.name] = pre
        for chain, bias_add in zip(chains, biases, strict=True):
            mm = chain.matmul
            w_scale = mm.input[1].removesuffix("_quantized") + "_scale"
            sums = _column_sums(mm, inits)
            fused = chain.output + ("" if one_sided else "_unshifted")
            after = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [q, mm.input[1], q + "_s", w_scale, "_rowq_u8_zero", *mm.input[3:4]],
                    [fused],
                    domain="com.microsoft",
                    name=mm.name + "_rowq",
                )
            ]
            if one_sided:
                b_name = next(i for i in bias_add.input if i != chain.output)
                bias = numpy_helper.to_array(inits[b_name]).astype(np.float32)
                new_b = b_name + "_rowq_gelu"
                g.initializer.append(
                    numpy_helper.from_array((bias - GELU_FLOOR * sums).astype(np.float32), new_b)
                )
                bias_add.input[list(bias_add.input).index(b_name)] = new_b
            else:
                cs = chain.output + "_colsum"
                g.initializer.append(numpy_helper.from_array(sums, cs))
                after += [
                    node("Mul", [q + "_sz", cs], chain.output + "_shift"),
                    node("Sub", [fused, chain.output + "_shift"], chain.output),
                ]
            replaced[chain.drop[0].name] = after
            for n in chain.drop[1:]:
                replaced[n.name] = []

    nodes = [m for n in g.node for m in replaced.get(n.name, [n])]
    used = {i for n in nodes for i in n.input}
    unused = [t for t in g.initializer if t.name in consts and t.name not in used]
    for t in unused:  # onnxruntime warns about each one it has to drop
        g.initializer.remove(t)
    for i, n in enumerate(nodes):
        if not n.name:
            n.name = f"_rowq_{i}"
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
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
