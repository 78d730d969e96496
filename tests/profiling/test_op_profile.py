"""ONNX Runtime's kernel profile of real exported artefacts (fp32 and int8 of a depth-2 tiny
BERT candidate), aggregated per layer and per op type. Structure and counts only: kernel times
are noise on a shared machine, so no timing is compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.config.target_spec import TargetSpec
from toolchain.errors import ConfigError
from toolchain.export.artefact import export_artefact
from toolchain.features.backbone import BackboneInfo
from toolchain.flows.run import RunConfig, run
from toolchain.profiling.cost_model import Law
from toolchain.profiling.op_profile import (
    EMBEDDINGS,
    HEAD,
    INT8_MATMULS,
    OTHER,
    assign_groups,
    collect,
    feeds_for_texts,
    render_table,
    slope_check,
)
from toolchain.search.cost import layer_flops

TEXTS = ["the film was really good", "a bad plot", "the cast was lovely and the ending was superb"]
RUNS = 2
TINY = BackboneInfo(n_layers=2, hidden=32, intermediate=64, heads=2, vocab=30522, max_positions=512)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, tiny_bert, toy_spec) -> dict:
    """fp32 and int8-dynamic artefacts of the run's deepest kept candidate (depth 2)."""
    home = tmp_path_factory.mktemp("opprof-home")
    run_dir = home / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIGN_HOME", str(home))
        run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=4,
                      heads=(("softmax", 3),), run_dir=str(run_dir)))
        board = json.loads((run_dir / "leaderboard.json").read_text())
        kept = [c for c in board["candidates"] if (run_dir / "heads" / f"{c['id']}.safetensors").is_file()]
        deep = max(kept, key=lambda c: (c["depth"], c["id"]))
        out = {"depth": deep["depth"]}
        for precision in ("fp32", "int8-dynamic"):
            out[precision] = export_artefact(run_dir, deep["id"], precision)[0]
    assert out["depth"] == 2
    return out


def _profile(folder: Path, tmp_path: Path) -> dict:
    work = tmp_path / "work"
    work.mkdir()
    profile = collect(folder / "model.onnx", feeds_for_texts(folder, TEXTS), runs=RUNS, warmup=1, tmp_dir=work)
    assert list(work.iterdir()) == []  # trace and optimized model deleted
    return profile


def _check_structure(profile: dict, depth: int) -> None:
    layers = {g for g in profile["by_layer"] if g.startswith("layer.")}
    assert layers == {f"layer.{i}" for i in range(depth)} and profile["depth"] == depth
    assert {EMBEDDINGS, HEAD} <= set(profile["by_layer"]) <= layers | {EMBEDDINGS, HEAD, OTHER}
    assert list(profile["by_layer"])[: depth + 1] == [EMBEDDINGS] + [f"layer.{i}" for i in range(depth)]
    assert abs(sum(v["share"] for v in profile["by_layer"].values()) - 1) <= 1e-6
    assert abs(sum(v["share"] for v in profile["by_op"].values()) - 1) <= 1e-6
    assert profile["inferences"] == RUNS * len(TEXTS)
    # Every node of the optimized graph runs once per inference and lands in exactly one group.
    assert profile["attribution"] == "graph"
    assert profile["kernels_per_inference"] == [profile["graph_nodes"]] * 2
    assert sum(v["nodes"] for v in profile["by_layer"].values()) == profile["graph_nodes"]
    assert sum(v["nodes"] for v in profile["by_op"].values()) == profile["graph_nodes"]
    total_layer = sum(v["total_us"] for v in profile["by_layer"].values())
    assert total_layer == pytest.approx(sum(v["total_us"] for v in profile["by_op"].values()))
    assert profile["per_inference_us"] == pytest.approx(total_layer / profile["inferences"])
    # The layers are the same graph: each holds the same number of nodes.
    assert len({profile["by_layer"][g]["nodes"] for g in layers}) == 1
    assert profile["tokens_median"] == sorted(len(f["input_ids"][0]) for f in feeds_of(profile))[1]


def feeds_of(profile: dict) -> list[dict]:
    return feeds_for_texts(Path(profile["model"]).parent, TEXTS)


def test_fp32_profile_covers_every_layer(artefacts, tmp_path):
    profile = _profile(artefacts["fp32"], tmp_path)
    _check_structure(profile, artefacts["depth"])
    assert "MatMul" in profile["by_op"]
    for i in range(artefacts["depth"]):
        assert "MatMul" in profile["by_layer"][f"layer.{i}"]["ops"]
    table = render_table(profile)
    assert all(g in table for g in profile["by_layer"]) and "MatMul" in table


def test_int8_profile_places_quantizers_with_their_consumers(artefacts, tmp_path):
    profile = _profile(artefacts["int8-dynamic"], tmp_path)
    _check_structure(profile, artefacts["depth"])
    assert set(INT8_MATMULS) & set(profile["by_op"])
    for i in range(artefacts["depth"]):
        assert set(INT8_MATMULS) & set(profile["by_layer"][f"layer.{i}"]["ops"])
    # The embeddings' output is quantized for layer 0's matmuls: by name it would be embeddings.
    for group in (EMBEDDINGS, OTHER):
        assert "DynamicQuantizeLinear" not in profile["by_layer"].get(group, {}).get("ops", {})


def test_assign_groups_by_scope_graph_and_consumers():
    nodes = [
        ("/Unsqueeze", "Unsqueeze", ["attention_mask"], ["m1"]),  # mask preparation
        ("/Mul", "Mul", ["m1"], ["mask"]),
        ("/backbone/embeddings/LayerNorm/LayerNormalization", "LayerNormalization", ["input_ids"], ["e"]),
        ("/backbone/embeddings/LayerNorm/LayerNormalization_output_0_QuantizeLinear", "DynamicQuantizeLinear",
         ["e"], ["eq"]),
        ("/backbone/encoder/layer.0/attention/self/query/MatMul_quant", "MatMulIntegerToFloat", ["eq"], ["q"]),
        ("/backbone/encoder/layer.0/attention/self/Add", "Add", ["q", "mask"], ["a"]),
        ("SkipLayerNormalization", "SkipLayerNormalization", ["a", "e"], ["h0"]),  # renamed by a fusion
        ("/backbone/encoder/layer.1/output/dense/MatMul", "MatMul", ["h0"], ["d"]),
        ("Gelu_token_3", "Gelu", ["d"], ["h1"]),
        ("/MatMul/MatMulAddFusion", "Gemm", ["h1"], ["logits"]),
        ("/Softmax", "Softmax", ["logits"], ["probs"]),
        ("", "Identity", ["probs"], ["unused"]),  # unnamed: no trace event can name it
    ]
    groups = assign_groups(nodes, ["probs"])
    assert groups == {
        "/Unsqueeze": OTHER, "/Mul": OTHER,
        "/backbone/embeddings/LayerNorm/LayerNormalization": EMBEDDINGS,
        "/backbone/embeddings/LayerNorm/LayerNormalization_output_0_QuantizeLinear": "layer.0",
        "/backbone/encoder/layer.0/attention/self/query/MatMul_quant": "layer.0",
        "/backbone/encoder/layer.0/attention/self/Add": "layer.0",
        "SkipLayerNormalization": "layer.0",
        "/backbone/encoder/layer.1/output/dense/MatMul": "layer.1",
        "Gelu_token_3": "layer.1",
        "/MatMul/MatMulAddFusion": HEAD, "/Softmax": HEAD,
    }


def _fake_profile(layer_us: dict[str, float], tokens: float = 10.0) -> dict:
    return {"model": "m.onnx", "tokens_median": tokens,
            "by_layer": {g: {"mean_us": us, "median_us": us} for g, us in layer_us.items()}}


def test_slope_check_converts_the_law_to_ms_per_layer():
    profile = _fake_profile({EMBEDDINGS: 5.0, "layer.0": 100.0, "layer.1": 300.0, HEAD: 7.0})
    flops = layer_flops(TINY, 10.0)
    fitted = slope_check(profile, Law("fit", n=3, intercept=0.5, slope=4e-7), TINY)
    assert fitted["model_ms_per_layer"] == pytest.approx(4e-7 * flops)
    assert fitted["profile_ms_per_layer"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2, embeddings left out
    assert fitted["ratio"] == pytest.approx(0.2 / (4e-7 * flops)) and fitted["spread"] == pytest.approx(3.0)
    assert fitted["law_mode"] == "fit" and fitted["layer_ms"] == {"layer.0": 0.1, "layer.1": 0.3}
    spec = TargetSpec(name="t", kind="local", arch="x86_64", threads=2)
    ratio = slope_check(profile, Law("ratio", n=2, ratio=2.0), TINY, target=spec, precision="int8-dynamic")
    per_second = spec.estimate.gflops_per_thread * 1e9 * 2 * spec.estimate.int8_speedup
    assert ratio["model_ms_per_layer"] == pytest.approx(2.0 * 1e3 * flops / per_second)
    assert slope_check(profile, 0.4)["ratio"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="not fitted"):
        slope_check(profile, Law("analytic"), TINY)
    with pytest.raises(ConfigError, match="no encoder layer"):
        slope_check(_fake_profile({EMBEDDINGS: 5.0, HEAD: 1.0}), 0.4)


def test_collect_refuses_no_feeds(artefacts):
    with pytest.raises(ConfigError, match="no feeds"):
        collect(artefacts["fp32"] / "model.onnx", [])
