"""The dtypes a bundle can be written in, and what each means for its files and its weights.

One table, read by the exporter (how each weight is stored), the bundle layout (file suffixes), `plan`
(predicted bytes) and the site (which dtypes an adapter can run). Suffixes are transformers.js 4.x's
(`utils/dtypes.js` DEFAULT_DTYPE_SUFFIX_MAPPING): the runtime derives file names from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gemma3n.errors import UserError


@dataclass(frozen=True)
class Dtype:
    name: str
    suffix: str  # onnx/<session><suffix>.onnx
    matmul: Literal["float", "int8", "int4"]  # decoder weights: float MatMul, dynamic int8, MatMulNBits
    lookup_bits: int | None  # embedding tables as our 4/8-bit lookups, or float Gathers
    float_bytes: int  # bytes per float weight and activation (fp16 halves them)

    @property
    def needs_shader_f16(self) -> bool:
        """fp16 arithmetic: WebGPU runs it only on adapters with the `shader-f16` feature."""
        return self.float_bytes == 2


DTYPES: dict[str, Dtype] = {d.name: d for d in (
    Dtype("fp32", "", "float", None, 4),
    Dtype("fp16", "_fp16", "float", None, 2),
    Dtype("q8", "_quantized", "int8", 8, 4),
    Dtype("q4", "_q4", "int4", 4, 4),
    Dtype("q4f16", "_q4f16", "int4", 4, 2),
)}

# The usual choice first, as a picker lists them: a bundle's first dtype is its default.
PREFERENCE = ("q4", "q4f16", "q8", "fp16", "fp32")
assert set(PREFERENCE) == set(DTYPES)


def parse_dtypes(text: str, option: str = "--dtype") -> tuple[str, ...]:
    """`q4,fp32` -> ("q4", "fp32"): known names, in order, each once; the first is a bundle's default."""
    names = tuple(dict.fromkeys(d.strip() for d in text.split(",") if d.strip()))
    unknown = [d for d in names if d not in DTYPES]
    if unknown or not names:
        what = f"unknown dtype {unknown[0]!r}" if unknown else "no dtype given"
        raise UserError(f"{option} {text!r}: {what}; choose one or more of {', '.join(DTYPES)}")
    return names
