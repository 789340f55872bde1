"""Export a Gemma 3n checkpoint to the fp32 ONNX sessions transformers.js loads.

Writes `onnx/<session>.onnx` with weights in `onnx/<session>.onnx_data` (the fp32 file names the runtime
asks for; the external-data count is declared in config.json by the bundle step, not here).
Three properties matter beyond "it loads":
* dynamo export only: the TorchScript exporter bakes the empty-cache and q_length == 1 branches into
  the graph and cannot export the audio tower (export-traps.md, trap 3);
* no build paths or stack traces in the files: the dynamo exporter stores them in metadata_props
  (trap 2), so all metadata and doc strings are dropped;
* byte-identical output for the same checkpoint, in any process: `Gemma3nTextModel.forward` iterates
  `set(layer_types)`, whose order follows the per-process string hash seed and reorders the rotary
  nodes; and output axis names are sympy expressions whose term order can vary. Tracing sees a sorted
  `set` and every dynamic output axis gets a fixed name.
"""

from __future__ import annotations

import builtins
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import onnx_ir as ir
import torch
from tqdm import tqdm
from transformers.models.gemma3n import modeling_gemma3n

from web_export.checkpoint import freeze_sparsity_cutoffs, load_parts
from web_export.sessions import BATCH, SessionSpec, session_specs

OPSET = 20
ONNX_SUBDIR = "onnx"
EXTERNAL_DATA_SUFFIX = "_data"
# Every dynamic output axis, by output-name prefix and axis index, gets one of these names.
OUTPUT_AXIS_NAMES = {
    "logits": {0: BATCH, 1: "num_logits"},
    "present.": {0: BATCH, 2: "total_sequence_length"},
    "inputs_embeds": {0: BATCH, 1: "sequence_length"},
    "per_layer_inputs": {0: BATCH, 1: "sequence_length"},
    "audio_features": {0: BATCH},
    "image_features": {0: BATCH},
}


def export_onnx(model_dir: Path, out_dir: Path, modalities: set[str] | None = None) -> dict:
    """Export every session of the checkpoint at `model_dir` into `out_dir/onnx/`.

    `modalities` picks encoders among {"audio", "vision"}; None means all a multimodal checkpoint has.
    Returns {"sessions": {name: {"path", "data_path", "inputs", "outputs", "seconds"}}, "seconds": total}.
    """
    start = time.perf_counter()
    parts = load_parts(Path(model_dir))
    freeze_sparsity_cutoffs(parts.text_model)
    specs = session_specs(parts, modalities)  # rejects bad modalities before anything is written
    onnx_dir = Path(out_dir) / ONNX_SUBDIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for spec in tqdm(specs, desc="exporting sessions", unit="session"):
        sessions[spec.name] = export_session(spec, onnx_dir / f"{spec.name}.onnx")
    return {"sessions": sessions, "seconds": time.perf_counter() - start}


def export_session(spec: SessionSpec, path: Path) -> dict:
    """Trace one session with the dynamo exporter, clean it and save it with external data."""
    start = time.perf_counter()
    model = trace(spec)
    strip_metadata(model)
    name_output_axes(model)
    data_path = path.with_name(path.name + EXTERNAL_DATA_SUFFIX)
    for stale in (path, data_path):
        stale.unlink(missing_ok=True)
    ir.save(model, path, external_data=data_path.name)
    return {
        "path": path,
        "data_path": data_path,
        "inputs": describe(model.graph.inputs),
        "outputs": describe(model.graph.outputs),
        "seconds": time.perf_counter() - start,
    }


def trace(spec: SessionSpec) -> ir.Model:
    spec.module.eval()
    with torch.no_grad(), hash_independent_layer_type_order(), warnings.catch_warnings():
        # Several inputs share each named axis (batch_size, ...): the exporter notes it keeps one name.
        warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
        program = torch.onnx.export(
            spec.module,
            spec.example_inputs,
            dynamo=True,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_shapes=spec.dynamic_shapes,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    return program.model


@contextmanager
def hash_independent_layer_type_order() -> Iterator[None]:
    """Make `set(...)` inside modeling_gemma3n iterate in sorted order while tracing.

    A module global named `set` shadows the builtin for that module only; it is used there solely to
    de-duplicate layer types, so a sorted list of the unique items is an exact stand-in.
    """
    with mock.patch.object(modeling_gemma3n, "set", _sorted_unique, create=True):
        yield


def _sorted_unique(items: Iterable) -> list:
    return sorted(builtins.set(items))


def strip_metadata(model: ir.Model) -> None:
    """Drop metadata_props and doc strings everywhere: they carry local paths and stack traces."""
    graphs: list[ir.Graph | ir.Function] = [model.graph, *model.functions.values()]
    for graph in graphs:
        graphs.extend(subgraphs(graph))
    model.metadata_props.clear()
    model.doc_string = None
    for graph in graphs:
        graph.metadata_props.clear()
        graph.doc_string = None
        for value in graph_values(graph):
            value.metadata_props.clear()
            value.doc_string = None
        for node in graph:
            node.metadata_props.clear()
            node.doc_string = None


def subgraphs(graph: ir.Graph | ir.Function) -> list[ir.Graph]:
    """Graphs held in node attributes (If/Loop/Scan bodies), one level down."""
    found: list[ir.Graph] = []
    for node in graph:
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                found.append(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                found.extend(attr.value)
    return found


def graph_values(graph: ir.Graph | ir.Function) -> Iterable[ir.Value]:
    yield from graph.inputs
    yield from graph.outputs
    if isinstance(graph, ir.Graph):
        yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def name_output_axes(model: ir.Model) -> None:
    """Give every dynamic output axis the fixed name from OUTPUT_AXIS_NAMES (or fail loudly)."""
    for output in model.graph.outputs:
        names = next((v for k, v in OUTPUT_AXIS_NAMES.items() if output.name.startswith(k)), {})
        dims = list(output.shape)
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                continue
            if axis not in names:
                raise ValueError(f"no fixed name for dynamic axis {axis} of output {output.name!r}")
            dims[axis] = ir.SymbolicDim(names[axis])
        output.shape = ir.Shape(dims)


def describe(values: Iterable[ir.Value]) -> dict[str, dict]:
    """{name: {"dtype": ..., "shape": [...]}} with symbolic axes as their names."""
    return {
        v.name: {
            "dtype": v.dtype.name.lower(),
            "shape": [d if isinstance(d, int) else str(d) for d in v.shape],
        }
        for v in values
    }
