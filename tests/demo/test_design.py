"""The Design tab for real: `matslice demo --design-parent NANO` in a subprocess, driven by gradio_client and by
Debian's Chromium.

A design's numbers are checked against `matslice plan --json` run on the same slice; an invalid design (a KV
store layer skipped while its readers stay) must come back with the plan's reason and leave nothing on disk; a
built design must be served (`/variants`, a `/compare` run, the plot) with its bundle's own manifest numbers,
and the `matslice slice` command the tab shows must rebuild the same checkpoint byte for byte. Builds go to a
temporary --cache; the default bundles are the ones tests/demo/test_demo.py uses (from the user cache).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")

from helpers import demo_server  # noqa: E402

from demo.design import Design, Parent, design_of, evaluate, layer_grid  # noqa: E402
from demo.variants import Registry  # noqa: E402
from gemma3n.config import e4b_config  # noqa: E402
from slicer.nesting import nested_widths  # noqa: E402
from slicer.plan import make_plan  # noqa: E402
from slicer.presets import get_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
STORE = 5  # the nano parent's sliding KV store layer, read by layers 6-8
DESIGN = {"skip": [8], "widths": [256] * 10, "modalities": ["text", "audio"], "dtypes": ["q4", "fp32"],
          "context": 2048}


# --- Pure logic: no server ----------------------------------------------------------------------------------------
def test_nested_widths_are_the_trained_granularities() -> None:
    assert nested_widths(16384) == tuple(2048 * k for k in range(1, 9))  # Google's table: 2_048 * k
    assert {128, 256, 512} <= set(nested_widths(512))  # the nano's 1/4, 1/2, full
    assert nested_widths(1000) == tuple(sorted({125 * k for k in range(1, 9)}))
    assert nested_widths(1001) == (1001,)


def test_group_widths_snap_per_layer() -> None:
    from demo.design import parse_layers
    from slicer.nesting import snap

    assert parse_layers("all", 10) == tuple(range(10)) and parse_layers("0-2, 7", 10) == (0, 1, 2, 7)
    assert snap(5000, nested_widths(16384)) == 4096 and snap(3072, nested_widths(16384)) == 2048  # ties: narrower
    assert snap(9000, nested_widths(512)) == 512
    for bad in ("3-1", "0-10", "seven"):
        with pytest.raises(ValueError, match="layers"):
            parse_layers(bad, 10)


def test_grid_marks_e4b_store_layers() -> None:
    grid = layer_grid(e4b_config().text)
    stores = {info.index: info.readers for info in grid if info.role == "store"}
    assert set(stores) == {18, 19}  # README: 18 for sliding attention, 19 for full
    assert stores[19] == (24, 29, 34) and set(stores[18]) == set(range(20, 35)) - {24, 29, 34}
    assert all(info.role == "reuse" and info.store in (18, 19) for info in grid[20:])


@pytest.mark.parametrize("preset", ["E2B", "E0.55B", "E1.96B-layer"])
def test_a_preset_design_plans_as_the_preset(preset: str) -> None:
    parent = Parent(e4b_config())
    spec = get_preset(preset).spec()
    result = evaluate(parent, design_of(parent.config, spec))
    assert result["valid"], result["message"]
    assert result["plan"]["params"] == make_plan(parent.config, spec).summary()["params"]
    sessions = result["predicted"]["q4"]["sessions"]
    assert result["predicted"]["q4"]["download"] == sum(s["bytes"] for s in sessions.values())


@pytest.mark.parametrize(("design", "reason"), [
    (Design(skip=(18,)), "layer 18 stores the KV cache that kept layer 20 reuses"),
    (Design(skip=tuple(range(35))), "skips all 35"),
    (Design(widths=(3000,) * 35), "not one of the parent's nested widths"),
    (Design(modalities=("audio",)), "keep text"),
    (Design(dtypes=()), "at least one dtype"),
    (Design(dtypes=("q3",)), "unknown dtype"),
    (Design(context=10**6), "context"),
    (Design(dtypes=("q4", "q4f16"), embeddings="streamed"), "--embeddings streamed supports q4, q8 and fp32"),
])
def test_invalid_designs_say_why(design: Design, reason: str) -> None:
    result = evaluate(Parent(e4b_config()), design)
    assert not result["valid"] and reason in result["message"], result["message"]


def test_starting_points_take_presets_that_fit_and_a_search_front() -> None:
    from demo.design import starting_points

    front = [{"name": "f1", "layers_to_skip": [20, 21, 22, 23, 24], "ffn_dims": [8192], "predicted": {"q4": 1}},
             {"name": "misfit", "layers_to_skip": [18]}]  # skips the sliding store layer: left out
    starts = starting_points(Parent(e4b_config()), front=front)
    assert "preset E2B" in starts and "preset E0.40B-text" in starts and "front misfit" not in starts
    assert starts["front f1"] == starts["preset E2B"]  # the same slice as Google's E2B
    assert starts["preset E0.40B-text"].modalities == ("text",)
    assert next(iter(starting_points(Parent(e4b_config())))) == "parent (nothing cut)"


def test_design_json_is_checked() -> None:
    with pytest.raises(ValueError, match="'widths' must be a list of whole numbers"):
        Design.from_json({"widths": "wide"})
    with pytest.raises(ValueError, match="unknown design field 'layers'"):
        Design.from_json({"layers": [1]})
    assert Design.from_json(DESIGN).to_json() == {**Design().to_json(), **DESIGN}


# --- The app ------------------------------------------------------------------------------------------------------
# --- The app (server) ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nano(nano_checkpoint: Path) -> Path:
    return nano_checkpoint


@pytest.fixture(scope="module")
def registry(default_variants: Registry) -> Registry:
    return default_variants


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="module")
def server(registry: Registry, nano: Path, cache: Path, tmp_path_factory):
    """`python -m matslice demo --design-parent NANO --cache TMP <bundles>`; yields (url, client). Its builds go to a
    user cache of their own (MATSLICE_CACHE), so each really slices and exports, whatever this machine built before:
    building is what these tests are about."""
    log = tmp_path_factory.mktemp("design") / "server.log"
    with demo_server(["--design-parent", str(nano), "--cache", str(cache),
                      *(str(v.folder) for v in registry.variants.values())], log,
                     env={"MATSLICE_CACHE": str(cache / "user-cache")}) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return server[1]


def matslice_plan(model: Path, *options: str, predictions: bool = False) -> dict:
    """`matslice plan --json`; without `predictions`, less its `bundle` and `memory` (the tab shows those per dtype,
    compared separately)."""
    done = subprocess.run([sys.executable, "-m", "matslice", "plan", str(model), *options, "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    printed = json.loads(done.stdout)
    return printed if predictions else {k: v for k, v in printed.items() if k not in ("bundle", "memory")}


def test_design_numbers_equal_plan(client, nano: Path, cache: Path) -> None:
    result = client.predict(DESIGN, api_name="/design")
    assert result["valid"], result["message"]
    assert result["options"] == ["--layers-to-skip", "8", "--ffn-dims", "256"]
    assert result["plan"] == matslice_plan(nano, "--layers-to-skip", "8", "--ffn-dims", "256")
    assert result["plan"]["params"]["effective"] < matslice_plan(nano)["params"]["effective"]
    printed = matslice_plan(nano, "--layers-to-skip", "8", "--ffn-dims", "256", "--dtype", "q4,fp32",
                            "--context", "2048", predictions=True)  # per session, as the tab
    side = sum(printed["bundle"]["side_files"].values())  # tokenizer, configs, chat template
    assert side > 0
    for dtype in ("q4", "fp32"):
        predicted = result["predicted"][dtype]
        assert set(predicted["sessions"]) == {"embed_tokens", "decoder_model_merged", "audio_encoder"}
        assert predicted["download"] == side + sum(s["bytes"] for s in predicted["sessions"].values())
        memory = predicted["memory"]
        assert memory["total"] == memory["weights"] + memory["kv_cache"] + memory["activations"]
    assert result["predicted"]["q4"]["download"] < result["predicted"]["fp32"]["download"]
    for dtype in ("q4", "fp32"):
        predicted = result["predicted"][dtype]
        assert predicted["memory"] == printed["memory"]["dtypes"][dtype]
        for session, found in predicted["sessions"].items():
            assert found["bytes"] == printed["bundle"]["sessions"][session][dtype]["bytes"], (dtype, session)
    text_only = client.predict({**DESIGN, "modalities": ["text"]}, api_name="/design")
    assert text_only["plan"] == matslice_plan(nano, "--layers-to-skip", "8", "--ffn-dims", "256",
                                              "--modalities", "text")
    assert "audio_encoder" not in text_only["predicted"]["q4"]["sessions"]
    corpus = "The cat sat on the mat.\nimport os\nos.path.join(a, b)\n"
    cut = client.predict({**DESIGN, "modalities": ["text"], "vocab_text": corpus, "vocab_size": 300},
                         api_name="/design")
    assert cut["valid"], cut["message"]
    path = Path(cut["options"][cut["options"].index("--vocab-corpus") + 1])
    assert path.parent == cache / "corpora" and path.read_text() == corpus  # what `slice --vocab-corpus` reads
    assert cut["plan"] == matslice_plan(nano, *cut["options"])
    assert text_only["plan"]["vocab"] is None and 265 < cut["plan"]["vocab"]["kept_text_ids"] <= 300
    assert cut["predicted"]["q4"]["download"] < text_only["predicted"]["q4"]["download"]
    streamed = client.predict({**DESIGN, "embeddings": "streamed"}, api_name="/design")
    assert "--embeddings streamed" in streamed["commands"][1]
    printed = matslice_plan(nano, "--layers-to-skip", "8", "--ffn-dims", "256", "--dtype", "q4,fp32",
                            "--embeddings", "streamed", predictions=True)
    for dtype in ("q4", "fp32"):
        found, sessions = streamed["predicted"][dtype], printed["bundle"]["sessions"]
        assert found["rows"] == sessions["embed_tokens"][dtype]["rows_bytes"] > 0
        assert found["sessions"]["embed_tokens"]["bytes"] == sessions["embed_tokens"][dtype]["bytes"]
        assert found["memory"] == printed["memory"]["dtypes"][dtype]
        assert found["download"] < result["predicted"][dtype]["download"]
        assert found["memory"]["weights"] < result["predicted"][dtype]["memory"]["weights"]
    starts = client.predict(api_name="/design_starts")
    assert starts["variant e2b-like"]["skip"] == [7, 8] and set(starts["variant e2b-like"]["widths"]) == {256, 512}


def test_invalid_design_reports_reason_and_builds_nothing(client, cache: Path, registry: Registry) -> None:
    bad = {**DESIGN, "skip": [STORE], "name": "bad-design"}
    result = client.predict(bad, api_name="/design")
    assert not result["valid"]
    assert result["message"].startswith(f"layer {STORE} stores the KV cache that kept layer 6 reuses")
    with pytest.raises(Exception, match=f"layer {STORE} stores the KV cache"):
        client.predict(bad, api_name="/build")
    with pytest.raises(Exception, match="name 'Bad Name!'"):
        client.predict({**DESIGN, "name": "Bad Name!"}, api_name="/build")
    with pytest.raises(Exception, match="already served"):
        client.predict({**DESIGN, "name": "parent"}, api_name="/build")
    assert not client.predict({"widths": "wide"}, api_name="/design")["valid"]
    designs = cache / "designs"
    assert not designs.exists() or not any(designs.iterdir())  # no folder, no half-written sibling
    assert "bad-design" not in client.predict(api_name="/variants")


def test_built_design_joins_the_comparison(client, cache: Path, nano: Path, tmp_path: Path) -> None:
    design = {"skip": [7, 8], "widths": [128] * 10, "modalities": ["text"], "dtypes": ["q4"], "context": 1024,
              "name": "my-slice"}
    built = client.predict(design, api_name="/build")
    assert built["variant"]["name"] == "my-slice"
    assert "my-slice" in client.predict(api_name="/variants")
    bundle = cache / "designs" / "my-slice" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["matslice"]["kept_layers"] == [0, 1, 2, 3, 4, 5, 6, 9]
    assert manifest["matslice"]["ffn_dims"] == [128] * 8 and manifest["text_only"]
    run = client.predict("the cat sat on the mat", ["parent", "my-slice"], None, 6, api_name="/compare")
    mine = run["variants"][1]
    assert mine["name"] == "my-slice" and mine["new_tokens"] >= 1
    assert mine["bundle_bytes"] == sum(r["bytes"] for r in manifest["files"].values())
    predicted = built["predicted"]["q4"]["sessions"]
    actual = {s: r["q4"]["bytes"] for s, r in manifest["sessions"].items()}
    assert set(predicted) == set(actual) == {"embed_tokens", "decoder_model_merged"}
    for session, size in actual.items():
        # weights and the largest tensor exact, each graph's own bytes estimated (< 1 %)
        assert abs(predicted[session]["bytes"] / size - 1) < 0.01, (session, predicted[session], size)
        largest = manifest["sessions"][session]["q4"]["largest_tensor"]
        assert predicted[session]["largest_tensor"] == [largest["name"], largest["bytes"]]
    points = {p["name"]: p for p in client.predict(api_name="/plot")["points"]}
    assert points["my-slice"]["bundle_bytes"] == mine["bundle_bytes"]
    # The shown command rebuilds the same checkpoint, byte for byte.
    slice_command = shlex.split(built["commands"][0])
    assert slice_command[:3] == ["matslice", "slice", str(nano)]
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "matslice", "slice", str(nano), str(again), *slice_command[4:]], cwd=ROOT,
                   check=True, capture_output=True)
    ours = cache / "designs" / "my-slice" / "checkpoint"
    assert (again / "model.safetensors").read_bytes() == (ours / "model.safetensors").read_bytes()
    assert shlex.split(built["commands"][1])[-2:] == ["--dtype", "q4"]
    with pytest.raises(Exception, match="already served"):
        client.predict(design, api_name="/build")


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_design_tab_in_chromium(server, client, cache: Path, nano: Path) -> None:
    """Tick "skip" on the store layer in the real page: the grid marks it, the verdict says why, Build refuses,
    and unticking recovers; the numbers on the page are the plan's."""
    from gemma3n.npm import NODE_DIR, ensure_installed
    from gemma3n.units import count, human_bytes

    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    ensure_installed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url, _ = server
    command = ["node", "design.mjs", url, "--out", str(ARTIFACTS), "--store", str(STORE), "--chromium", str(CHROMIUM)]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("failure") is None, result
    assert result["stores"] == ["layer-4", "layer-5"]  # the full and the sliding KV store layers
    assert result["reuses"] == ["layer-6", "layer-7", "layer-8", "layer-9"]
    assert "KV store, read by L6-8" in result["storeLabel"]
    assert f"layer {STORE} stores the KV cache that kept layer 6 reuses" in result["invalid"]
    assert "No numbers" in result["numbersInvalid"] and "download" in result["numbersBefore"]
    assert f"layer {STORE} stores the KV cache" in result["buildInvalid"] and "Not built" in result["buildInvalid"]
    assert not (cache / "designs" / "bad-design").exists()
    # The page's numbers are the plan's: the starting design is the parent, text + audio, q4 at 2048 tokens.
    page = client.predict({"modalities": ["text", "audio"], "dtypes": ["q4"], "context": 2048}, api_name="/design")
    assert page["plan"] == matslice_plan(nano)
    q4 = page["predicted"]["q4"]
    for shown in (count(page["plan"]["params"]["effective_published"]), human_bytes(q4["download"]),
                  human_bytes(q4["memory"]["total"]), human_bytes(q4["largest_tensor"][1])):
        assert shown in result["numbersBefore"], (shown, result["numbersBefore"])
    assert "Valid design" in result["validAfter"] and "matslice slice" in result["commands"]
    hosts = {u.split("/")[2] for u in result["requests"] if u.startswith(("http:", "https:", "ws:"))}
    assert hosts == {url.split("/")[2]}, hosts  # nothing leaves the machine
    for shot in ("demo-compare.png", "demo-design-invalid.png", "demo-design.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000


def design_in_chromium(url: str, *options: str) -> dict:
    """node/design.mjs against a served demo: its JSON (what the page showed at each step)."""
    from gemma3n.npm import NODE_DIR, ensure_installed

    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    ensure_installed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    command = ["node", "design.mjs", url, "--out", str(ARTIFACTS), "--store", str(STORE), "--chromium", str(CHROMIUM),
               *options]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("failure") is None, result
    return result


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_build_from_the_page_joins_compare_and_generates(server, client, cache: Path) -> None:
    """As a person: set a design (the E2B-like starting point, text only, q4 and q8: a bundle no other test builds),
    name it, press Build; the page shows the build's stages and progress, then the variant is among Compare's
    choices, and a prompt run on it answers."""
    url, _ = server
    result = design_in_chromium(url, "--build", "ui-slice", "--start", "variant e2b-like", "--text-only",
                                "--add-dtype", "q8")
    assert "q8" in result["designNumbers"], result["designNumbers"]  # the table gained a q8 column
    assert "Built ui-slice" in result["built"], result
    staged = " ".join(result["progress"])
    assert "%" in staged and any(stage in staged for stage in ("slicing", "tracing", "exporting")), result["progress"]
    assert any("ui-slice" in choice for choice in result["choices"]), result["choices"]
    assert "ui-slice" in client.predict(api_name="/variants")
    assert any(h.startswith("ui-slice") for h in result["headers"]), result["headers"]
    assert sum(bool(text.strip()) for text in result["columns"]) == 4, result["columns"]  # 3 picked + the new one
    manifest = json.loads((cache / "designs" / "ui-slice" / "bundle" / "manifest.json").read_text())
    assert manifest["dtypes"] == ["q4", "q8"] and manifest["text_only"], manifest["dtypes"]


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_a_build_failing_half_way_leaves_no_variant_and_says_why(registry: Registry, nano: Path,
                                                                 tmp_path: Path) -> None:
    """The parent's weights vanish after the design was checked (its config still reads): the build fails while
    slicing, the page names the missing file, and neither a variant nor a design folder is left."""
    parent = tmp_path / "parent"
    shutil.copytree(nano, parent)
    cache = tmp_path / "cache"
    with demo_server(["--design-parent", str(parent), "--cache", str(cache),
                      *(str(v.folder) for v in registry.variants.values())], tmp_path / "server.log",
                     env={"MATSLICE_CACHE": str(tmp_path / "user-cache")}) as (url, client):
        assert client.predict({"modalities": ["text"]}, api_name="/design")["valid"]  # read the parent's headers
        for weights in parent.glob("*.safetensors"):
            weights.unlink()
        result = design_in_chromium(url, "--build", "doomed", "--text-only")
        assert "doomed" not in client.predict(api_name="/variants")
    assert "Build failed" in result["built"] or "Not built" in result["built"], result["built"]
    assert "safetensors" in result["built"], result["built"]
    assert not any(c.endswith("doomed") for c in result["choices"]), result["choices"]
    designs = cache / "designs"
    assert not designs.exists() or not list(designs.iterdir()), list(designs.iterdir())
