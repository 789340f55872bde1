"""Byte sizes as people write them on a command line (`2GB`, `500MB`, `256MiB`) and read them in a report; counts
as a report shows them."""

from __future__ import annotations

from gemma3n.errors import UserError

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def parse_size(text: str, option: str = "size") -> int:
    """`2GB`, `1.5GB`, `256MiB` or a plain byte count -> bytes."""
    upper = str(text).strip().upper()
    for unit, factor in sorted(_UNITS.items(), key=lambda kv: -len(kv[0])):
        number = upper[: -len(unit)].strip()
        if upper.endswith(unit) and number.replace(".", "", 1).isdigit():
            return int(float(number) * factor)
    if upper.isdigit():
        return int(upper)
    raise UserError(f"{option} {text!r} is not understood: write it like 2GB, 500MB or 256MiB")


def human_bytes(count: int | float) -> str:
    """1_340_000_000 -> '1.34 GB' (decimal units, as downloads are shown)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}" if count < 10 * size else f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def count(value: int | None) -> str:
    """1_910_000_000 -> '1.91B' (parameters as model cards write them); None -> '-'."""
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)
