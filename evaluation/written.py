"""What a written session variant weighs, checked tensor by tensor against what its plan predicts.

The oracle of `matslice plan`'s byte predictions: the tests hold every export to it (exactly the predicted weight
tensors, inside or outside the .onnx file, and nothing else in the data chunks), and `benchmarks.graph_bytes` fits
the graph-size model on what it measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemma3n.layout import Part, aligned


@dataclass(frozen=True)
class Written:
    """One written session variant measured against its predicted tensors."""

    data_bytes: int  # data chunks + the inline payloads of the weights
    graph_bytes: int  # the .onnx file without those payloads
    largest_tensor: tuple[str, int]


def measure(path: Path, parts: list[Part]) -> Written:
    """Check that the weight tensors of the variant at `path` are exactly the predicted `parts` (names, bytes,
    inside or outside the .onnx file) and that its data chunks hold nothing else; return what it weighs."""
    import onnx
    from onnx import TensorProto

    from web_export.graph import all_graphs, largest_tensor, tensor_bytes

    model = onnx.load(path, load_external_data=False)
    inits = {t.name: t for g in all_graphs(model) for t in g.initializer}
    inline_payload = 0
    predicted = set()
    for part in parts:
        for spec in part.tensors:
            tensor = inits.get(spec.name)
            if tensor is None or tensor_bytes(tensor) != spec.nbytes:
                found = None if tensor is None else tensor_bytes(tensor)
                raise AssertionError(f"{path.name}: {spec.name} predicted {spec.nbytes} bytes, written {found}")
            external = tensor.data_location == TensorProto.EXTERNAL
            if external == part.inline:
                raise AssertionError(f"{path.name}: {spec.name} predicted {'inline' if part.inline else 'external'}")
            if not external:
                inline_payload += len(tensor.raw_data)
            predicted.add(spec.name)
    stray = [t.name for t in inits.values() if t.data_location == TensorProto.EXTERNAL and t.name not in predicted]
    if stray:
        raise AssertionError(f"{path.name}: external tensors no plan predicts: {stray[:5]}")
    files = sum(p.stat().st_size for p in path.parent.glob(path.name + "_data*"))
    expected = sum(aligned(t.nbytes) for part in parts if not part.inline for t in part.tensors)
    if files != expected:
        raise AssertionError(f"{path.name}: data files hold {files} bytes, the predicted tensors {expected}")
    return Written(files + inline_payload, path.stat().st_size - inline_payload, largest_tensor(model))
