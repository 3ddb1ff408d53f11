"""Graph cleanup (onnxslim: constant folding, shape inference, dead-node removal) and fp16.

fp16 keeps the overflow-prone parts of SD 2.x in fp32: every attention score path (the Q.K^T
MatMul, its scaling and the Softmax, as diffusers' `upcast_attention` does) and the
normalisations (GroupNorm exports as InstanceNormalization; LayerNorm), whose variance
overflows fp16 on large activations. Graph inputs and outputs keep their types (eps and
embeddings stay fp32, images uint8), so fp32 and fp16 artifacts are interchangeable.
"""
from __future__ import annotations

from ..errors import require

TWO_GB = 2**31 - 1
# ops kept in fp32 besides onnxruntime's default block list
FP32_OPS = ("Softmax", "InstanceNormalization", "LayerNormalization", "Exp", "Round", "Clip")
_SCORE_PATH = ("Add", "Mul", "Div", "Where", "Cast", "Sub")  # ops between Q.K^T and Softmax


def is_large(model) -> bool:
    """True when the graph cannot be one protobuf (> 2 GB) and needs external data."""
    from google.protobuf.message import EncodeError

    try:
        return model.ByteSize() > TWO_GB
    except EncodeError:  # protobuf refuses to even size messages over 2 GB
        return True


def slim(model):
    """Constant folding + shape inference + cleanup with onnxslim; returns the new model.

    Graphs over 2 GB keep torch's constant folding only: onnxslim (and ONNX shape inference)
    work on one serialised protobuf and would need several more copies of the weights."""
    if is_large(model):
        return model
    onnxslim = require("onnxslim", "onnx")
    return onnxslim.slim(model)


def attention_score_nodes(model) -> list[str]:
    """Names of the nodes computing attention scores: each Softmax and the chain back to the
    MatMul producing Q.K^T."""
    producer = {out: node for node in model.graph.node for out in node.output}
    names = []
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        names.append(node.name)
        current = producer.get(node.input[0])
        while current is not None and current.op_type in _SCORE_PATH + ("MatMul",):
            names.append(current.name)
            if current.op_type == "MatMul":
                break
            current = producer.get(current.input[0])
    return names


def to_fp16(model, infer_shapes: bool = True):
    """fp16 weights and compute, fp32 where it would overflow, I/O types unchanged. With
    `infer_shapes=False` the graph's value_info must already hold the types (large graphs:
    shape inference ran on the files, and the weights are placeholders)."""
    require("onnxruntime", "onnx")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    for i, node in enumerate(model.graph.node):  # the block list goes by node name
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    scores = attention_score_nodes(model)
    model = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=not infer_shapes or is_large(model),
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS), node_block_list=scores)
    model = drop_round_trip_casts(drop_duplicate_casts(model), set(scores))
    return topological_sort(model)  # the converter appends its input Casts at the end


def drop_round_trip_casts(model, fp32_nodes: set[str]):
    """Bypass fp32 -> fp16 -> fp32 Cast pairs the converter puts between two fp32-kept nodes
    (e.g. the Q.K^T MatMul and its Softmax): they would overflow exactly where we keep fp32.
    Only pairs whose first Cast reads the float output of a kept node (named in `fp32_nodes`,
    or one of FP32_OPS) are bypassed: other Casts may read fp16 or integer tensors."""
    onnx = require("onnx", "onnx")
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    producer = {out: node for node in model.graph.node for out in node.output}
    outputs = {o.name for o in model.graph.output}

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None)

    rename, dropped = {}, set()
    for node in model.graph.node:
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        source = producer.get(first.input[0]) if first is not None and first.input else None
        kept = source is not None and source.op_type != "Cast" and (
            source.name in fp32_nodes or source.op_type in FP32_OPS)
        if (kept and first.op_type == "Cast" and cast_to(first) == fp16
                and cast_to(node) == fp32 and node.output[0] not in outputs):
            rename[node.output[0]] = first.input[0]
            dropped.add(id(node))
    keep = [n for n in model.graph.node if id(n) not in dropped]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in keep for i in n.input} | outputs
    keep = [n for n in keep if n.op_type != "Cast" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def drop_duplicate_casts(model):
    """Remove repeated identical Cast nodes: the converter emits one per consumer of a shared
    initializer, all with the same output name (which breaks SSA)."""
    seen, keep = {}, []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            if seen[node.output[0]] != node.input[0]:
                raise ValueError(f"two different Casts produce {node.output[0]}")
            continue
        if node.op_type == "Cast":
            seen[node.output[0]] = node.input[0]
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def topological_sort(model):
    """Reorder graph nodes so each comes after the producers of its inputs (in place)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or dangling input at node {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model
