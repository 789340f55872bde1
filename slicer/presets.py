"""Named slices: Google's 16 official Mix-n-Match configurations, and our sub-billion ones.

The official table (`data/gemma3n-slicing-configs.csv`, from Google's MatFormer Lab) writes widths as
Python expressions such as `2_048 * 4`; they are parsed here as integer products, never evaluated.
Our presets are expressed against the E4B parent, like Google's, and are checked by the tests to be
valid slices whose computed counts are what their names say.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from gemma3n.errors import UserError
from slicer.plan import SliceSpec

_TERM = re.compile(r"^\s*(\d[\d_]*)\s*$")


def parse_int(text: str, option: str) -> int:
    """A whole number, allowing `_` separators and products (`2_048 * 4`). Anything else is refused."""
    value = 1
    for factor in text.split("*"):
        match = _TERM.match(factor)
        if not match or match.group(1).endswith("_") or "__" in match.group(1):
            raise UserError(
                f"{option} has {text.strip()!r}, not a whole number: write widths like 8192 or 2_048 * 4"
            )
        value *= int(match.group(1).replace("_", ""))
    return value


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """`[a, b, ...]` or `a,b,...` of whole numbers or products; empty text gives ()."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    if not body.strip():
        return ()
    return tuple(parse_int(part, option) for part in body.split(","))


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    layers_to_skip: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    published_effective_b: float | None = None
    published_mmlu: str | None = None
    official: bool = False
    audio_layers_to_skip: tuple[int, ...] = ()
    audio_ffn_dim: int | None = None
    modalities: tuple[str, ...] = ()

    def spec(self) -> SliceSpec:
        return SliceSpec(self.layers_to_skip, self.ffn_dims, self.audio_layers_to_skip, self.audio_ffn_dim,
                         self.modalities, self.name)


def _official_name(label: str) -> str:
    if label == "Main model":
        return "E4B"
    if label == "Config for official E2B Model":
        return "E2B"
    match = re.fullmatch(r"Config for (E[\d.]+B) \((layer|block)-level\)", label)
    if not match:
        raise ValueError(f"unexpected preset label {label!r} in the official table")
    return f"{match.group(1)}-{match.group(2)}"


@cache
def official_presets() -> tuple[Preset, ...]:
    text = resources.files("slicer.data").joinpath("gemma3n-slicing-configs.csv").read_text()
    presets = []
    for row in csv.DictReader(text.splitlines()):
        presets.append(Preset(
            name=_official_name(row["name"]),
            description=row["name"],
            layers_to_skip=parse_int_list(row["Layers Skipped"], "Layers Skipped"),
            ffn_dims=parse_int_list(row["FFN Hidden Dims"], "FFN Hidden Dims"),
            published_effective_b=float(row["# Effective Params (B)"]),
            published_mmlu=row["MMLU PT accuracy"],
            official=True,
        ))
    return tuple(presets)


_E4B_LAYERS = 35


def _skip(*ranges: range) -> tuple[int, ...]:
    return tuple(sorted({i for r in ranges for i in r}))


# Sub-billion presets against the E4B parent, named by their computed effective parameters
# (Google's convention, two decimals; the tests hold each name to its count). Each keeps the KV store
# layers (18 sliding, 19 full) whenever it keeps a layer that reads them, keeps the activation-sparse
# early layers, and uses 4096, one of the nested widths (2048 * k) MatFormer trained.
OUR_PRESETS: tuple[Preset, ...] = (
    Preset("E0.93B", "24 layers at width 4096; keeps 4 of the 15 KV-sharing layers",
           _skip(range(24, 35)), (4096,)),
    Preset("E0.78B", "20 layers at width 4096; drops all 15 KV-sharing layers",
           _skip(range(20, 35)), (4096,)),
    Preset("E0.55B", "14 layers (0-11 and the two KV store layers) at width 4096",
           _skip(range(12, 18), range(20, 35)), (4096,)),
    Preset("E0.40B-text", "10 layers (0-7, 18, 19) at width 4096, text only: a browser-tab variant",
           _skip(range(8, 18), range(20, 35)), (4096,), modalities=("text",)),
)


def all_presets() -> tuple[Preset, ...]:
    return official_presets() + OUR_PRESETS


def get_preset(name: str) -> Preset:
    for preset in all_presets():
        if preset.name.lower() == name.lower():
            return preset
    names = ", ".join(p.name for p in all_presets())
    raise UserError(f"unknown preset {name!r}: choose one of {names} (see `matslice presets`)")
