"""Rewrites of the bundled model's ONNX graph: the same numbers on every CPU, and graphs
that TensorRT can build.

- `unsigned_weights` and `portable_softmax` make the CPU graph compute the same bits on
  every x86 CPU ONNX Runtime runs on, whatever vector width it dispatches (see each).

- The bundled model is dynamically quantised (DynamicQuantizeLinear -> MatMulInteger ->
  Cast -> Mul), which ONNX Runtime runs fast on a CPU and TensorRT does not build at all.
  `dequantize_dynamic` rewrites it into float arithmetic that TensorRT builds:
  - each weight becomes the float value of its INT8 code ((q - zero) * scale);
  - each activation is still rounded to its UINT8 grid, one grid per image, the way
    DynamicQuantizeLinear does on one image, with float ops (ReduceMax/Min, Div, Round,
    Clip).
  On 80 images of ../shared/data the rounding takes the mean score difference from the CPU
  model from 0.009 to 0.003 (max 0.076 to 0.029); no verdict changed either way. No library
  does this rewrite: ONNX Runtime's quantisation tools go one way.
- TensorRT 11 removed its FP16 and INT8 builder flags: precision is the graph's own
  (strong typing). `to_fp16` converts the float graph with ONNX Runtime's converter, keeping
  float32 inputs and outputs and the ops that overflow or round wrongly in half precision.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = [
    "FP16_KEEP_FLOAT32", "PrecisionError", "cpu_portable", "dequantize_dynamic", "float_graph",
    "integer_weight_nodes", "portable_softmax", "shift_weights", "to_fp16", "unsigned_weights",
]

# Kept in float32 under --fp16: LayerNorm's variance (Pow, ReduceMean) and the final L2 norm
# overflow or lose too much in half precision, the attention softmax (Softmax, or its
# portable parts Exp and ReduceSum) sums hundreds of terms, and the activation rounding
# (Div, Round, Clip, ReduceMax/Min, Max, Min, Neg) must be exact to match the CPU model. The
# matrix products, the bulk of the work, run in FP16.
FP16_KEEP_FLOAT32 = ["Pow", "ReduceMean", "Sqrt", "LpNormalization", "Softmax", "Exp",
                     "ReduceSum", "Div", "Round", "Clip", "ReduceMax", "ReduceMin", "Max",
                     "Min", "Neg"]


class PrecisionError(ValueError):
    pass


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _prune(graph: onnx.GraphProto) -> None:
    """Drops nodes and initializers nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def integer_weight_nodes(model: onnx.ModelProto, dtype: type) -> list[onnx.NodeProto]:
    """The integer matrix products whose constant weights are stored as `dtype`."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type in ("MatMulInteger", "ConvInteger") and n.input[1] in inits
            and numpy_helper.to_array(inits[n.input[1]]).dtype == dtype]


def shift_weights(model: onnx.ModelProto, source: type, target: type,
                  missing_zero: str) -> onnx.ModelProto:
    """A copy of `model` whose `source`-typed integer weights and their zero points are
    stored as `target` (INT8 <-> UINT8, shifted by 128): every product (w - zero) keeps its
    value; only the kernels ONNX Runtime picks for it change.

    A weight without a constant zero point cannot absorb the shift: `missing_zero` "raise"
    refuses the model (PrecisionError), "keep" leaves that weight as it is.
    """
    out = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in out.graph.initializer}
    delta = 128 if np.dtype(target) == np.uint8 else -128
    shifted: set[str] = set()
    for node in integer_weight_nodes(out, source):
        weight = node.input[1]
        zero = node.input[3] if len(node.input) > 3 else ""
        if zero not in inits or numpy_helper.to_array(inits[zero]).dtype != source:
            if missing_zero == "raise":
                raise PrecisionError(f"{node.name}: {np.dtype(source)} weights without a "
                                     "constant zero point")
            continue
        for name in (weight, zero):
            if name not in shifted:
                value = numpy_helper.to_array(inits[name]).astype(np.int16) + delta
                inits[name].CopyFrom(numpy_helper.from_array(value.astype(target), name))
                shifted.add(name)
    return out


def unsigned_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its INT8 weights stored as UINT8 (+128, zero point +128).

    The values are identical, but ONNX Runtime's x86 kernels differ: for UINT8 activations
    times INT8 weights an AVX2 CPU without VNNI adds pairs of products in saturating 16-bit
    lanes (vpmaddubsw), so its results depend on the CPU (a deep product can be far off
    its exact value). UINT8 x UINT8 is widened first and
    exact, so the model computes the ONNX definition on every CPU and on GPUs alike."""
    model = shift_weights(model, np.int8, np.uint8, missing_zero="raise")
    onnx.checker.check_model(model)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _reduce(op: str, src: str, dst: str, axis: int, axes_input: str | None
            ) -> onnx.NodeProto:
    """A keepdims reduction over `axis`, its axes given as an input or as an attribute."""
    if axes_input:
        return helper.make_node(op, [src, axes_input], [dst], keepdims=1, name=dst)
    return helper.make_node(op, [src], [dst], axes=[axis], keepdims=1, name=dst)


def portable_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose Softmax nodes are written out as ReduceMax, Sub, Exp,
    ReduceSum and Div.

    ONNX Runtime's fused Softmax adds up a row's exponentials in as many lanes as the CPU's
    vectors hold (8 with AVX2, 16 with AVX-512), so the sum, and every probability of the
    row, differs in the last bit from one CPU to another. In a dynamically quantised model
    that bit does not stay small: it moves a value across a rounding boundary of the next
    DynamicQuantizeLinear, and twelve blocks later the bundled model's score has moved by
    up to 0.1. The parts compute each value alone, or sum in an order that does not depend
    on the vector width, and give the same bits on AVX2 and AVX-512 CPUs: checked by
    running the model with AVX-512 hidden from ONNX Runtime (docs/numerics.md).

    Raises:
      PrecisionError: a Softmax of opset < 13 over other than the last axis (those flatten
        the trailing axes, which this rewrite does not reproduce).
    """
    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    opset = _opset(out)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
        if opset < 13 and axis != -1:
            raise PrecisionError(f"{node.name or node.output[0]}: Softmax-{opset} over axis "
                                 f"{axis} flattens the axes after it; re-export at opset 13+")
        x, y = node.input[0], node.output[0]
        p = f"{node.name or y}_portable"
        axes = f"{p}_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
        nodes += [
            # ReduceMax takes its axes as an input from opset 18, ReduceSum from opset 13.
            _reduce("ReduceMax", x, f"{p}_max", axis, axes if opset >= 18 else None),
            helper.make_node("Sub", [x, f"{p}_max"], [f"{p}_shifted"], name=f"{p}_shifted"),
            helper.make_node("Exp", [f"{p}_shifted"], [f"{p}_exp"], name=f"{p}_exp"),
            _reduce("ReduceSum", f"{p}_exp", f"{p}_sum", axis, axes if opset >= 13 else None),
            helper.make_node("Div", [f"{p}_exp", f"{p}_sum"], [y], name=f"{p}_div"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def cpu_portable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int] | None]:
    """An imported model as every x86 CPU computes it alike, and what was changed: for a
    dynamically quantised graph, INT8 weights stored as UINT8 (those with a constant zero
    point; see unsigned_weights) and every Softmax written out (portable_softmax). A float
    graph is returned as it is, with None: without a rounding after it, a last-bit
    difference stays a last-bit difference."""
    quantised = any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
                    for n in model.graph.node)
    if not quantised:
        return model, None
    shifted = shift_weights(model, np.int8, np.uint8, missing_zero="keep")
    changes = {"uint8_weights": len(integer_weight_nodes(shifted, np.uint8))
               - len(integer_weight_nodes(model, np.uint8)),
               # without a constant zero point a weight cannot be shifted: those keep the
               # INT8 kernels, which saturate on CPUs without VNNI
               "int8_weights_left": len(integer_weight_nodes(shifted, np.int8)),
               "softmax_written_out": sum(n.op_type == "Softmax" for n in model.graph.node)}
    return portable_softmax(shifted), changes


def _fake_quantize(graph: onnx.GraphProto, quantize: onnx.NodeProto, rank: int) -> str:
    """Float nodes computing what DynamicQuantizeLinear(x) stands for: x rounded to its
    UINT8 grid and scaled back. Returns the name of that float tensor.

    The grid is each image's own (range over all but the batch axis): the CPU model runs one
    image per call for exactly this reason, so per-image grids give its numbers while
    letting TensorRT batch."""
    x = quantize.input[0]
    p = f"{quantize.output[0]}_fq"
    for name, value in ((f"{p}_zero", 0.0), (f"{p}_255", 255.0)):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    z, top = f"{p}_zero", f"{p}_255"
    axes = list(range(1, rank))
    nodes = [
        # scale = (max(x_max, 0) - min(x_min, 0)) / 255; zero = clip(round(-min / scale))
        helper.make_node("ReduceMax", [x], [f"{p}_max"], axes=axes, keepdims=1),
        helper.make_node("ReduceMin", [x], [f"{p}_min"], axes=axes, keepdims=1),
        helper.make_node("Max", [f"{p}_max", z], [f"{p}_hi"]),
        helper.make_node("Min", [f"{p}_min", z], [f"{p}_lo"]),
        helper.make_node("Sub", [f"{p}_hi", f"{p}_lo"], [f"{p}_range"]),
        helper.make_node("Div", [f"{p}_range", top], [f"{p}_scale"]),
        helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neglo"]),
        helper.make_node("Div", [f"{p}_neglo", f"{p}_scale"], [f"{p}_zraw"]),
        helper.make_node("Round", [f"{p}_zraw"], [f"{p}_zround"]),
        helper.make_node("Clip", [f"{p}_zround", z, top], [f"{p}_zp"]),
        # q = clip(round(x / scale) + zero, 0, 255); x' = (q - zero) * scale
        helper.make_node("Div", [x, f"{p}_scale"], [f"{p}_xs"]),
        helper.make_node("Round", [f"{p}_xs"], [f"{p}_xr"]),
        helper.make_node("Add", [f"{p}_xr", f"{p}_zp"], [f"{p}_xz"]),
        helper.make_node("Clip", [f"{p}_xz", z, top], [f"{p}_q"]),
        helper.make_node("Sub", [f"{p}_q", f"{p}_zp"], [f"{p}_centred"]),
        helper.make_node("Mul", [f"{p}_centred", f"{p}_scale"], [p]),
    ]
    index = list(graph.node).index(quantize)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + 1 + offset, node)
    return p


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: len(v.type.tensor_type.shape.dim)
            for v in list(inferred.graph.value_info) + list(inferred.graph.input)
            if v.type.tensor_type.HasField("shape")}


def dequantize_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every dynamically quantised MatMul/Conv in float32 that
    computes the same values (see the module's docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    consts = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    rounded: dict[str, str] = {}  # DynamicQuantizeLinear output -> its float stand-in
    ranks = _ranks(model)
    for node in list(graph.node):
        if node.op_type not in ("MatMulInteger", "ConvInteger"):
            continue
        a_q, w_q = node.input[0], node.input[1]
        w_zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
        quantize = producer.get(a_q)
        after = consumers[node.output[0]]
        if (quantize is None or quantize.op_type != "DynamicQuantizeLinear" or len(after) != 1
                or after[0].op_type != "Cast"):
            raise PrecisionError(f"{node.name or node.output[0]}: not the dynamic "
                                 "quantisation pattern this rewrite knows")
        cast = after[0]
        muls = consumers[cast.output[0]]
        if len(muls) != 1 or muls[0].op_type != "Mul":
            raise PrecisionError(f"{node.name}: no scale Mul after its Cast")
        mul = muls[0]
        scale_name = next(i for i in mul.input if i != cast.output[0])
        scales = producer.get(scale_name)
        if scales is None or scales.op_type != "Mul":
            raise PrecisionError(f"{node.name}: its scale is not activation x weight scale")
        w_scale_name = next(i for i in scales.input if i != quantize.output[1])
        if w_q not in consts or w_scale_name not in consts:
            raise PrecisionError(f"{node.name}: weights or their scale are not constant")
        weight = consts[w_q].astype(np.float32)
        if w_zp is not None:
            zero = consts[w_zp].astype(np.float32)
            weight = weight - (zero.reshape(-1, 1, 1, 1) if node.op_type == "ConvInteger"
                               and zero.ndim == 1 else zero)
        scale = consts[w_scale_name].astype(np.float32)
        if node.op_type == "ConvInteger" and scale.ndim == 1:
            scale = scale.reshape(-1, 1, 1, 1)  # one per output channel
        weight_name = f"{w_q}_dequantized"
        graph.initializer.append(numpy_helper.from_array(weight * scale, weight_name))
        op = "MatMul" if node.op_type == "MatMulInteger" else "Conv"
        if a_q not in rounded:
            rank = ranks.get(quantize.input[0])
            if not rank or rank < 2:
                raise PrecisionError(f"{quantize.input[0]}: rank unknown, cannot give each "
                                     "image its own quantisation grid")
            rounded[a_q] = _fake_quantize(graph, quantize, rank)
        replacement = helper.make_node(op, [rounded[a_q], weight_name], [mul.output[0]],
                                       name=f"{node.name or weight_name}_float")
        replacement.attribute.extend(node.attribute)  # Conv's strides, pads, group...
        index = list(graph.node).index(node)
        graph.node.insert(index, replacement)
        for old in (node, cast, mul):
            graph.node.remove(old)
    _prune(graph)
    onnx.checker.check_model(model)
    return model


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Half-precision weights and arithmetic; float32 in, float32 out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if any(n.op_type in ("MatMulInteger", "ConvInteger") for n in model.graph.node):
        model = dequantize_dynamic(model)
    return convert_float_to_float16(model, keep_io_types=True,
                                    op_block_list=FP16_KEEP_FLOAT32)


def float_graph(onnx_path: str | Path, fp16: bool) -> onnx.ModelProto:
    """model.onnx as TensorRT will build it: no integer kernels, FP16 if asked."""
    model = onnx.load(str(onnx_path))
    return to_fp16(model) if fp16 else dequantize_dynamic(model)
