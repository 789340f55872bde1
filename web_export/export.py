"""Trace a Gemma 3n checkpoint into the ONNX sessions transformers.js loads, without loading its weights.

Each session is traced on a skeleton of the model whose parameters are zero-memory placeholders
(`checkpoint.load_skeleton`), so tracing costs the same for a 16 GB checkpoint as for a tiny one. The
result is a `SessionGraph`: the graph with every weight a data-less initializer, and the checkpoint tensor
each one is read from when a variant is written (`quantize.write_variant`, one block of rows at a time).
While the graph is optimized the weights are graph inputs, so constant folding can neither see the
placeholders' zeros nor materialise transposed copies of the weights.
`export_onnx` writes the fp32 variant: `onnx/<session>.onnx` with chunked `onnx/<session>.onnx_data*`.
Three properties matter beyond "it loads" (web_export/TRAPS.md has the traps behind them):
* dynamo export only: the TorchScript exporter bakes the empty-cache and q_length == 1 branches into
  the graph and cannot export the audio tower;
* no build paths or stack traces in the files: the dynamo exporter stores them in metadata_props, so
  all metadata and doc strings are dropped when a variant is saved (`graph.strip_metadata`);
* byte-identical output for the same checkpoint, in any process: `Gemma3nTextModel.forward` iterates
  `set(layer_types)`, whose order follows the per-process string hash seed and reorders the rotary
  nodes; and output axis names are sympy expressions whose term order can vary. Tracing sees a sorted
  `set` and every dynamic output axis gets a fixed name.
"""

from __future__ import annotations

import builtins
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import onnx
import onnx_ir as ir
import onnxscript
import torch
from onnxscript.rewriter import onnx_fusions
from tqdm import tqdm
from transformers.models.gemma3n import modeling_gemma3n

from gemma3n.progress import Progress, report, steps
from web_export.checkpoint import freeze_sparsity_cutoffs, load_skeleton
from web_export.quantize import write_variant
from web_export.sessions import BATCH, SessionSpec, session_specs
from web_export.weights import CheckpointTensor, SessionGraph, stub

OPSET = 20
ONNX_SUBDIR = "onnx"
# Every dynamic output axis, by output-name prefix and axis index, gets one of these names.
OUTPUT_AXIS_NAMES = {
    "logits": {0: BATCH, 1: "num_logits"},
    "present.": {0: BATCH, 2: "total_sequence_length"},
    "inputs_embeds": {0: BATCH, 1: "sequence_length"},
    "per_layer_inputs": {0: BATCH, 1: "sequence_length"},
    "audio_features": {0: BATCH},
    "image_features": {0: BATCH},
}


def export_onnx(model_dir: Path, out_dir: Path, modalities: set[str] | None = None, *,
                graphs: list[SessionGraph] | None = None) -> dict:
    """Export the fp32 variant of every session of the checkpoint at `model_dir` into `out_dir/onnx/`.

    `modalities` picks encoders among {"audio", "vision"}; None means all a multimodal checkpoint has. `graphs`:
    those sessions already traced (`trace_sessions`), as `write_bundle` takes them.
    Returns {"sessions": {name: {"path", "data_path", "inputs", "outputs", "seconds"}}, "seconds": total}.
    """
    start = time.perf_counter()
    onnx_dir = Path(out_dir) / ONNX_SUBDIR
    sessions = {}
    for graph in trace_sessions(model_dir, modalities) if graphs is None else graphs:
        began = time.perf_counter()
        onnx_dir.mkdir(parents=True, exist_ok=True)
        saved = write_variant(graph, "fp32", onnx_dir / f"{graph.name}.onnx", max_tensor_bytes=None)
        sessions[graph.name] = {
            "path": saved.path,
            "data_path": saved.data_files[0] if saved.data_files else None,
            "inputs": describe(graph.model.graph.input),
            "outputs": describe(graph.model.graph.output),
            "seconds": time.perf_counter() - began,
        }
    return {"sessions": sessions, "seconds": time.perf_counter() - start}


# Tracing cost, heaviest first: a pool starts the long sessions first so the workers finish together.
TRACE_ORDER = ("decoder_model_merged", "vision_encoder", "audio_encoder", "embed_tokens")


def trace_sessions(model_dir: Path, modalities: set[str] | None = None, progress: Progress | None = None,
                   workers: int | None = None) -> list[SessionGraph]:
    """Trace every session the checkpoint has (or `modalities` asks for) on a weightless skeleton.

    Tracing is single-threaded Python (minutes per session of a real model), so the sessions are traced in
    `workers` processes at once (default: one per CPU, at most one per session). Each process traces on its own
    skeleton; the graphs are the same bytes as one process traces, in the same order.
    """
    parts = load_skeleton(Path(model_dir))
    freeze_sparsity_cutoffs(parts.text_model)
    specs = session_specs(parts, modalities)  # rejects bad modalities before anything is traced
    workers = min(available_cpus() if workers is None else workers, len(specs))
    if workers <= 1:
        return [trace_session(spec, parts.sources)
                for spec in steps(specs, "tracing sessions", "session", progress, name=lambda spec: spec.name)]
    names = [spec.name for spec in specs]
    del parts, specs  # the workers trace on skeletons of their own
    graphs: dict[str, SessionGraph] = {}
    spawn = multiprocessing.get_context("spawn")  # a fork would copy torch's threads mid-flight
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_init) as pool, \
            tqdm(total=len(names), desc=f"tracing sessions ({workers} processes)", unit="session") as bar:
        report(progress, 0.0, f"tracing sessions: {', '.join(names)}")
        ordered = sorted(names, key=lambda name: TRACE_ORDER.index(name) if name in TRACE_ORDER else -1)
        pending = {pool.submit(_trace_named, Path(model_dir), modalities, name): name for name in ordered}
        for done in as_completed(pending):
            graphs[pending[done]] = done.result()
            bar.update()
            report(progress, len(graphs) / len(names), f"tracing sessions: {pending[done]} traced")
    return [graphs[name] for name in names]


def available_cpus() -> int:
    """The CPUs this process may run on (all of them where the OS cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker_init() -> None:
    torch.set_num_threads(1)  # the workers share the CPUs between them


def _trace_named(model_dir: Path, modalities: set[str] | None, name: str) -> SessionGraph:
    """One session traced in a worker process, on a skeleton loaded there."""
    parts = load_skeleton(model_dir)
    freeze_sparsity_cutoffs(parts.text_model)
    spec = next(spec for spec in session_specs(parts, modalities) if spec.name == name)
    return trace_session(spec, parts.sources)


def trace_session(spec: SessionSpec, sources: dict[int, CheckpointTensor]) -> SessionGraph:
    """Trace one session, optimize it with its weights held out, and clean it (metadata, axis names)."""
    model = trace(spec)
    weights = hold_out_weights(model, sources)
    onnxscript.optimizer.optimize_ir(model)
    onnx_fusions.fuse(model)
    read = {v.name for v in weights.values() if v.uses()}
    for value in weights.values():
        model.graph.inputs.remove(value)
    name_buffers(model, spec.module)
    name_output_axes(model)
    proto = ir.serde.serialize_model(model)
    stubs = [stub(name, onnx.TensorProto.FLOAT, v.shape.numpy()) for name, v in weights.items() if name in read]
    proto.graph.initializer.extend(stubs)
    return SessionGraph(spec.name, proto, {s.name: weights[s.name].meta["source"] for s in stubs})


def name_buffers(model: ir.Model, module: torch.nn.Module, min_elements: int = 256) -> int:
    """Give the constants that hold a module's buffers the buffers' names (the tracer calls them `val_N`), so a
    plan can name them too (the decoder's rotary tables, slicer/footprint.py). Returns how many were renamed."""
    buffers = {}
    for name, buffer in module.named_buffers():
        if buffer.numel() >= min_elements and buffer.device.type != "meta":
            array = buffer.detach().cpu().numpy()
            buffers[(array.dtype.str, array.shape, array.tobytes())] = name
    renamed = 0
    for value in list(model.graph.initializers.values()):
        if value.const_value is None:
            continue
        array = value.const_value.numpy()
        name = buffers.get((array.dtype.str, array.shape, array.tobytes()))
        if name is not None and name not in model.graph.initializers:
            model.graph.initializers.pop(value.name)
            value.name = name
            model.graph.initializers[name] = value
            renamed += 1
    return renamed


def hold_out_weights(model: ir.Model, sources: dict[int, CheckpointTensor]) -> dict[str, ir.Value]:
    """Turn the initializers backed by placeholders into graph inputs (remembering their sources)."""
    held = {}
    for name, value in list(model.graph.initializers.items()):
        tensor = getattr(value.const_value, "raw", None)
        if not isinstance(tensor, torch.Tensor) or id(tensor) not in sources:
            continue
        model.graph.initializers.pop(name)
        value.const_value = None
        value.meta["source"] = sources[id(tensor)]
        model.graph.inputs.append(value)
        held[name] = value
    return held


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
            optimize=False,  # trace_session optimizes, with the weights held out
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


def describe(values: Iterable[onnx.ValueInfoProto]) -> dict[str, dict]:
    """{name: {"dtype": ..., "shape": [...]}} with symbolic axes as their names."""
    return {
        v.name: {
            "dtype": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
            "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    }
