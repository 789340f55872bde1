"""A search front in the demo: `matslice demo --front FILE` slices and exports the front's slices through the
variant-building path and lists each with the search's predicted bytes and measured KL / top-1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("optuna")
gradio = pytest.importorskip("gradio")

from demo.design import Designer, Parent, load_front  # noqa: E402
from demo.variants import build_front, pick_front  # noqa: E402
from gemma3n.errors import UserError  # noqa: E402
from search.front import save_front  # noqa: E402
from search.study import Request, run_search  # noqa: E402

OPTIONS = {"block_size": 32, "symmetric": True, "max_file_bytes": 1_500_000_000, "max_tensor_bytes": 256 << 20}


def test_pick_front_spreads_from_smallest_to_largest() -> None:
    entries = [{"name": f"s{i}"} for i in range(1, 11)]
    assert [e["name"] for e in pick_front(entries, 3)] == ["s1", "s5", "s10"]  # round(4.5) == 4
    assert pick_front(entries, 20) == entries and pick_front(entries, 1) == [entries[-1]]


def test_the_front_is_served_by_name_with_its_numbers(tiny_text: Path, tmp_path: Path) -> None:
    """On the text-only tiny model: exporting the multimodal one's towers takes minutes on 2 cores."""

    result = run_search(Request(tiny_text, 10**10, "q4", OPTIONS, trials=6, batch=3, window=128))
    path = save_front(tmp_path / "front.json", result["front"])
    entries = load_front(path)
    registry = build_front(entries, most=1)
    chosen = entries[-1]
    assert registry.names == ["parent", chosen["name"]] and registry.parent == "parent"
    variant = registry.get(chosen["name"])
    assert variant.searched == {"bytes": chosen["bytes"], "kl": chosen["kl"], "top1": chosen["top1"]}
    assert variant.slice_record["kept_layers"] == [i for i in range(8) if i not in chosen["layers_to_skip"]]
    assert variant.bytes == pytest.approx(chosen["bytes"], rel=0.15)  # the tiny graphs' bytes are estimated
    assert variant.summary()["search"]["kl"] == chosen["kl"]
    labels = dict((name, label) for label, name in registry.choices())
    assert labels["parent"] == "parent" and "MB predicted" in labels[chosen["name"]] and "KL" in labels[chosen["name"]]
    again = build_front(entries, most=1)  # cached: the same folders, nothing rebuilt
    assert again.get(chosen["name"]).folder == variant.folder
    starts = Designer(Parent.load(tiny_text), tmp_path / "designs", front=entries).starts()
    assert any(label.startswith("front s") for label in starts)


def test_a_front_without_its_parent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "front.json"
    path.write_text(json.dumps([{"name": "s1", "model": str(tmp_path / "gone"), "layers_to_skip": [1]}]))
    with pytest.raises(UserError, match="not a checkpoint folder"):
        build_front(load_front(path))
