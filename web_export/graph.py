"""What an ONNX graph holds, read and tidied: the names its nodes read, its tensors' sizes, its subgraphs.

Every dtype variant is checked and cleaned the same way before it is saved: nodes and initializers nothing reads
are pruned, doc strings and metadata (build paths, tool versions) are dropped so the bytes are reproducible, and
no weight may exceed one WebGPU binding. These helpers work on any ModelProto, pending weights or not.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from gemma3n.errors import UserError
from gemma3n.layout import DEFAULT_MAX_FILE_BYTES, MAX_TENSOR_BYTES, tensor_limit
from web_export.weights import Pending


def read_names(model: onnx.ModelProto) -> set[str]:
    """Every value name a node of any graph reads, plus the graph outputs."""
    names = {o.name for o in model.graph.output}
    for graph in all_graphs(model):
        for node in graph.node:
            names.update(node.input)
    return names


def prune(model: onnx.ModelProto, pending: Pending) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads, until nothing changes."""
    graph = model.graph
    while True:
        read = read_names(model)
        nodes = [n for n in graph.node if any(o in read for o in n.output)]
        if len(nodes) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(nodes)
    read = read_names(model)
    keep = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    pending.keep_only(read)


def materialize(model: onnx.ModelProto, pending: Pending) -> None:
    """Compute every pending initializer into the graph (those small enough to stay inside the .onnx file)."""
    tensors = {t.name: t for t in model.graph.initializer}
    for derived in pending.derived:
        pieces = list(zip(*derived.arrays(), strict=True))
        for name, arrays in zip(derived.outputs, pieces, strict=True):
            tensor = tensors[name]
            data = np.concatenate([a.reshape(-1) for a in arrays]).astype(onnx.helper.tensor_dtype_to_np_dtype(
                tensor.data_type), copy=False)
            tensor.raw_data = data.tobytes()
    pending.derived.clear()


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop doc strings and metadata_props everywhere: they may carry build paths and tool versions."""
    del model.metadata_props[:]
    model.doc_string = ""
    for graph in all_graphs(model):
        graph.doc_string = ""
        del graph.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
        for tensor in graph.initializer:
            tensor.doc_string = ""
            del tensor.metadata_props[:]
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]


def all_graphs(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every subgraph held in node attributes, at any depth."""
    graphs = [model.graph]
    for graph in graphs:
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)
    return graphs


def tensor_bytes(tensor: TensorProto) -> int:
    """Size of a tensor's payload from its type and shape: the same whether it is inline, external or pending."""
    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def largest_tensor(model: onnx.ModelProto, float_bytes: int = 4, among: set[str] | None = None) -> tuple[str, int]:
    """(name, bytes) of the largest initializer (of those named in `among`, when given): it decides which GPUs can
    hold the session. `float_bytes=2` sizes float32 tensors as the fp16 conversion will store them."""
    sizes = [
        (t.name, tensor_bytes(t) * float_bytes // 4 if t.data_type == TensorProto.FLOAT else tensor_bytes(t))
        for g in all_graphs(model)
        for t in g.initializer
        if among is None or t.name in among
    ]
    return max(sizes, key=lambda item: (item[1], item[0]), default=("", 0))


def check_tensor_limit(
    model: onnx.ModelProto,
    limit: int | None = MAX_TENSOR_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    float_bytes: int = 4,
    weights: set[str] | None = None,
) -> None:
    """Fail on any weight above `limit` (one WebGPU binding) or any tensor above `max_file_bytes` (one data chunk):
    after the splits, only a weight that is neither a MatMul's nor a Gathered table's can still be that big. The
    tensor limit holds for the `weights` (all initializers when None): the traced constants beside them (the
    decoder's rotary tables, 196 kB at E4B's head_dim) cannot be split and are far below any adapter's limit."""
    name, size = largest_tensor(model, float_bytes, weights)
    if limit is not None and size > limit:
        raise UserError(
            f"initializer {name!r} is {size:,} bytes, over the {limit:,}-byte single-tensor limit "
            "(one WebGPU binding), and only MatMul weights and tables can be split: raise --max-tensor-bytes"
        )
    name, size = largest_tensor(model, float_bytes)
    if size > tensor_limit(None, max_file_bytes):
        raise UserError(
            f"initializer {name!r} is {size:,} bytes, over the {max_file_bytes:,}-byte external data chunk size; "
            "a tensor cannot span two chunks"
        )
