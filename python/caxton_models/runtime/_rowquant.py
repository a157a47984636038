"""The int8 graph rewrite behind :data:`caxton_models.runtime._quant.INT8_RECIPE`:
onnxruntime's dynamically quantised MatMuls made into one fused
``MatMulIntegerToFloat`` each, with one activation scale per row (token).
``_quant`` decides what is quantised and measures it; this module rewrites
the graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ACT_LEVELS", "GELU_FLOOR", "consumers_of", "row_quantized_matmuls"]


def consumers_of(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


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
    from onnx import helper

    g = model.graph
    for i, n in enumerate(g.node):  # the rewrite finds nodes by name
        if not n.name:
            n.name = f"_rowq_node_{i}"
    rw = _Rewrite(model)
    replaced: dict[str, list[Any]] = {}  # a dropped node's name -> what takes its place
    for dql in [n for n in g.node if n.op_type == "DynamicQuantizeLinear"]:
        chains = _chains(dql, rw.consumers, rw.producers)
        if chains:
            replaced.update(rw.replace(dql, chains))
    nodes = [m for n in g.node for m in replaced.get(n.name, [n])]
    rw.drop_unused_constants(nodes)
    for i, n in enumerate(nodes):
        if not n.name:
            n.name = f"_rowq_{i}"
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


class _Rewrite:
    """The nodes and constants one graph's row quantisation adds."""

    def __init__(self, model: Any) -> None:
        import numpy as np
        from onnx import numpy_helper

        self.g = model.graph
        self.opset = _opset(model)
        self.consts: dict[str, Any] = {
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
        self.g.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.consts.items())
        self.inits = {t.name: t for t in self.g.initializer}
        self.consumers = consumers_of(self.g)
        self.producers = {o: n for n in self.g.node for o in n.output}
        self.constants = set(self.inits)

    @staticmethod
    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> Any:
        from onnx import helper

        return helper.make_node(op, inputs, [out], **attrs)

    def add_initializer(self, array: Any, name: str) -> str:
        from onnx import numpy_helper

        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(array, name)
            self.g.initializer.append(self.inits[name])
        return name

    def replace(self, dql: Any, chains: list[_Chain]) -> dict[str, list[Any]]:
        """What takes the place of ``dql`` and of each of its chains."""
        x, q = dql.input[0], dql.output[0]
        k = int(self.inits[chains[0].matmul.input[1]].dims[0])
        biases = [_foldable_bias(c.output, self.consumers, self.inits) for c in chains]
        one_sided = _gelu_output(x, self.producers, self.constants) and all(
            b is not None for b in biases
        )
        out = {dql.name: self.one_sided_rows(x, q, k) if one_sided else self.rows(x, q, k)}
        for chain, bias_add in zip(chains, biases, strict=True):
            out[chain.drop[0].name] = self.fused(chain, q, bias_add if one_sided else None)
            out.update((n.name, []) for n in chain.drop[1:])
        return out

    def reduce(self, op: str, x: str, out: str) -> Any:
        if self.opset >= 18:  # the axes became an input
            return self.node(op, [x, "_rowq_last_axis"], out)
        return self.node(op, [x], out, axes=[-1])

    def one_sided_rows(self, x: str, q: str, k: int) -> list[Any]:
        """``q``: ``x`` + the GELU floor, from 0 to the row's max; ``q_s``."""
        node = self.node
        return [
            node("Add", [x, "_rowq_gelu_floor"], q + "_xg"),
            self.reduce("ReduceMax", q + "_xg", q + "_max"),
            node("Mul", [q + "_max", "_rowq_inv_levels"], q + "_s0"),
            node("Max", [q + "_s0", "_rowq_tiny"], q + "_s"),
            *self.quantize(q + "_xg", q, k, None),
        ]

    def rows(self, x: str, q: str, k: int) -> list[Any]:
        """``q``: ``x`` from the row's min to max; ``q_s``, and ``q_sz`` for
        the product's shift."""
        node = self.node
        return [
            self.reduce("ReduceMax", x, q + "_max"),
            self.reduce("ReduceMin", x, q + "_min"),
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
            *self.quantize(x, q, k, q + "_z"),
        ]

    def quantize(self, x: str, p: str, k: int, zero: str | None) -> list[Any]:
        """``clip(round(x / s) + z)`` as uint8, ``s`` and ``z`` per row."""
        import numpy as np

        node = self.node
        if self.opset < 13:  # no per-axis QuantizeLinear: round(x / s + z) in floats
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
        shape = self.add_initializer(np.array([-1, k], np.int64), f"_rowq_rows_of_{k}")
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

    def fused(self, chain: _Chain, q: str, gelu_bias: Any) -> list[Any]:
        """One ``MatMulIntegerToFloat`` for ``chain``; ``gelu_bias``: the bias
        ``Add`` that takes the GELU shift (one-sided rows), else the shift
        ``s z`` times the column sums comes off after it."""
        import numpy as np
        from onnx import helper, numpy_helper

        mm = chain.matmul
        w_scale = mm.input[1].removesuffix("_quantized") + "_scale"
        sums = _column_sums(mm, self.inits)
        fused = chain.output + ("" if gelu_bias is not None else "_unshifted")
        out = [
            helper.make_node(
                "MatMulIntegerToFloat",
                [q, mm.input[1], q + "_s", w_scale, "_rowq_u8_zero", *mm.input[3:4]],
                [fused],
                domain="com.microsoft",
                name=mm.name + "_rowq",
            )
        ]
        if gelu_bias is not None:
            b_name = next(i for i in gelu_bias.input if i != chain.output)
            bias = numpy_helper.to_array(self.inits[b_name]).astype(np.float32)
            shifted = (bias - GELU_FLOOR * sums).astype(np.float32)
            new_b = self.add_initializer(shifted, b_name + "_rowq_gelu")
            gelu_bias.input[list(gelu_bias.input).index(b_name)] = new_b
            return out
        cs = self.add_initializer(sums, chain.output + "_colsum")
        out += [
            self.node("Mul", [q + "_sz", cs], chain.output + "_shift"),
            self.node("Sub", [fused, chain.output + "_shift"], chain.output),
        ]
        return out

    def drop_unused_constants(self, nodes: list[Any]) -> None:
        used = {i for n in nodes for i in n.input}
        for t in [t for t in self.g.initializer if t.name in self.consts and t.name not in used]:
            self.g.initializer.remove(t)  # onnxruntime warns about each one it has to drop


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
