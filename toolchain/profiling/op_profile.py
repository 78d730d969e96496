"""Where the time goes: ONNX Runtime's own kernel profile of an artefact, per transformer layer
and per op type (what ST Edge AI's ``validate`` and nn-Meter's kernel view show).

:func:`collect` runs an artefact with ``SessionOptions.enable_profiling`` and reads the trace
ONNX Runtime writes (Chrome trace JSON): one ``cat == "Node"`` event named
``<node>_kernel_time`` per executed node and run, ``dur`` in microseconds, ``args.op_name`` the
op type. The trace is deleted once read. On a target the agent collects the events instead
(``codesign profile --op-profile``) and :mod:`.op_profile_target` aggregates them here.

Node → group. Exported node names carry their module scope (``/embeddings/...``,
``/layer.3/attention/...``, ``/backbone/encoder/layer.3/...``; root-level ``/MatMul`` etc. are
the mask, pooling and head). ONNX Runtime's fusions rename some nodes (``SkipLayerNormalization``,
``Gelu_token_0``, a bare ``Gather``): those are placed by the graph instead, through the
producers of their inputs in the optimized model the session saves (its node names are the
trace's). An activation quantizer (``DynamicQuantizeLinear``, named after the tensor it
quantizes, e.g. ``/layer.0/output/LayerNorm/..._QuantizeLinear``) is work done for its
consumers, so it goes to their group: the quantization of layer 0's output belongs to layer 1,
as the quantization fused into a ``DynamicQuantizeMatMul`` belongs to that MatMul's layer.

Feeds: what the artefact's session takes, one inference per dict: ``{"input_ids": int64 [1, n],
"attention_mask": int64 [1, n]}`` at the real length ``n`` (no padding), as the runner times
them; :func:`feeds_for_texts` tokenizes texts that way with the artefact's own tokenizer.

Kernel time is not latency: it leaves out the session's own overhead (input binding, executor
scheduling, allocation between kernels), and it adds the profiler's own per-node timing, which
weighs most on small kernels; the profile is also taken at another moment than the records the
cost model was fitted on. So :func:`slope_check` reports the ratio of the profile's per-layer
time to the cost model's per-layer slope rather than expecting 1 (all-MiniLM-L6-v2 on a shared
2-core AMD EPYC, 7.5 tokens, 1 thread: 1.7-2.3 fp32, 1.5-1.8 int8).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ExportError

SCHEMA = 1
EMBEDDINGS, HEAD, OTHER = "embeddings", "pooling/head", "other"
QUANTIZERS = ("DynamicQuantizeLinear", "QuantizeLinear")
INT8_MATMULS = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul",
                "QGemm", "QAttention")
_LAYER = re.compile(r"(?:^|/)layer\.(\d+)(?:/|_|$)")
_EMBEDDINGS = re.compile(r"(?:^|/)embeddings(?:/|_|$)")
KERNEL_SUFFIX = "_kernel_time"


def scope_of(name: str) -> str | None:
    """The group a node's name places it in, or None when the name carries no scope (a fused
    node ONNX Runtime named itself) and the graph must decide."""
    m = _LAYER.search(name)
    if m:
        return f"layer.{int(m.group(1))}"
    if _EMBEDDINGS.search(name):
        return EMBEDDINGS
    if name.startswith("/"):
        return ""  # root scope: mask preparation, pooling or head (the graph tells which)
    return None


def _layer_key(group: str) -> tuple[int, int]:
    if group == EMBEDDINGS:
        return (0, 0)
    if group.startswith("layer."):
        return (1, int(group.split(".")[1]))
    return (2, 0) if group == HEAD else (3, 0)


def _topological(info: Mapping[str, tuple], producer: Mapping[str, str]) -> list[str]:
    """Node names producers first (Kahn); a saved model is sorted already, this makes sure."""
    pending = {n: {producer[i] for i in info[n][2] if i in producer} - {n} for n in info}
    users: dict[str, list[str]] = defaultdict(list)
    for n, ps in pending.items():
        for p in ps:
            users[p].append(n)
    ready = [n for n in info if not pending[n]]
    order: list[str] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for u in users[n]:
            pending[u].discard(n)
            if not pending[u]:
                ready.append(u)
    return order + [n for n in info if n not in set(order)]  # a cycle (invalid graph): as given


def assign_groups(nodes: Sequence[tuple[str, str, Sequence[str], Sequence[str]]],
                  graph_outputs: Sequence[str] = ()) -> dict[str, str]:
    """Node name → group, for ``nodes`` given as (name, op_type, inputs, outputs).

    A name with a layer or embeddings scope decides. A quantizer goes to its consumers' group
    (the earliest, if several). A node ONNX Runtime renamed (no scope) goes to the deepest group
    among its producers', else to its consumers' one. A root-scope node is pooling/head when it
    is downstream of the encoder and some path from it reaches a graph output without passing
    an encoder node; otherwise (mask and token-type preparation) it is other.
    """
    info = {n[0]: n for n in nodes if n[0]}  # ORT may leave a node unnamed: no trace event to place
    producer = {out: n for n in info for out in info[n][3] if out}
    consumers: dict[str, list[str]] = defaultdict(list)
    for name in info:
        for i in info[name][2]:
            if i in producer:
                consumers[producer[i]].append(name)
    fixed = {n: s for n in info if (s := scope_of(n)) and info[n][1] not in QUANTIZERS}
    order = _topological(info, producer)
    encoder_above: set[str] = set()  # some encoder node is upstream (or it is one)
    for n in order:
        if n in fixed or any(producer.get(i) in encoder_above for i in info[n][2]):
            encoder_above.add(n)
    outputs = set(graph_outputs)
    free_path: set[str] = set()  # reaches a graph output through non-encoder nodes only
    for n in reversed(order):
        if n not in fixed and (outputs & set(info[n][3]) or any(c in free_path for c in consumers[n])):
            free_path.add(n)
    memo: dict[str, str | None] = {}

    def group(name: str) -> str | None:
        if name in memo:
            return memo[name]  # None while in progress: a cycle through quantizers adds nothing
        memo[name] = None
        s = fixed.get(name)
        if s is None and info[name][1] in QUANTIZERS:
            after = {g for c in consumers[name] if (g := group(c))}
            s = min(after, key=_layer_key) if after else None
        if s is None and scope_of(name) == "":
            s = HEAD if name in encoder_above and name in free_path else OTHER
        if s is None:
            up = {g for i in info[name][2] if i in producer and (g := group(producer[i])) and g != OTHER}
            after = set() if up else {g for c in consumers[name] if (g := group(c))}
            s = max(up, key=_layer_key) if up else (after.pop() if len(after) == 1 else OTHER)
        memo[name] = s
        return s

    return {name: group(name) or OTHER for name in order}


def graph_nodes(optimized: Path) -> tuple[list[tuple[str, str, list[str], list[str]]], list[str]] | None:
    """((name, op_type, inputs, outputs) per node, graph output names) of the optimized model,
    or None without onnx (a board's runtime-only install): then names alone place the nodes."""
    try:
        import onnx
    except ImportError:
        return None
    if not optimized.is_file():
        return None
    model = onnx.load(str(optimized), load_external_data=False)
    return ([(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node],
            [o.name for o in model.graph.output])


def _runs(events: list[dict]) -> list[list[dict]]:
    """Kernel events grouped by the ``model_run`` event that encloses them, in run order."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX)),
                     key=lambda e: e["ts"])
    out: list[list[dict]] = [[] for _ in runs]
    starts = [r["ts"] for r in runs]
    for k in kernels:
        i = int(np.searchsorted(starts, k["ts"], side="right")) - 1
        if i >= 0 and k["ts"] <= runs[i]["ts"] + runs[i]["dur"]:
            out[i].append(k)
    return out


def _tokens(feeds: Mapping[str, np.ndarray]) -> float:
    mask = feeds.get("attention_mask")
    if mask is not None:
        mask = np.asarray(mask)
        return float(mask.sum()) / max(mask.shape[0], 1)
    ids = np.asarray(feeds.get("input_ids", np.zeros((1, 0))))
    return float(ids.shape[-1])


def collect(model_path, feeds_list: Sequence[Mapping[str, np.ndarray]], *, threads: int = 1,
            runs: int = 5, warmup: int = 1, tmp_dir=None) -> dict:
    """Kernel-time profile of ``model_path``: each feed run ``warmup`` times (not counted: first
    runs allocate and pack weights), then ``runs`` times; aggregated per group (embeddings,
    ``layer.i``, pooling/head, other) and per op type. JSON-safe; see :func:`aggregate`.

    ``feeds_list``: one dict per inference (see the module doc); ``tmp_dir``: where the trace
    and the optimized model are written (a fresh temporary folder inside it, removed after)."""
    import onnxruntime as ort

    feeds_list = list(feeds_list)
    if not feeds_list:
        raise ConfigError(f"op profile of {model_path}: no feeds; pass at least one input dict")
    if runs < 1 or warmup < 0 or threads < 1:
        raise ConfigError(f"op profile of {model_path}: runs {runs}, warmup {warmup}, threads {threads}; "
                          "need runs >= 1, warmup >= 0, threads >= 1")
    with tempfile.TemporaryDirectory(prefix="codesign-opprof-", dir=tmp_dir) as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # saving an ORT_ENABLE_ALL graph warns it is host-specific
        try:
            session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unexported classes
            raise ExportError(f"op profile: onnxruntime could not load {model_path}: {exc}") from exc
        trace = None
        try:
            for _ in range(warmup):
                for feeds in feeds_list:
                    session.run(None, dict(feeds))
            for _ in range(runs):
                for feeds in feeds_list:
                    session.run(None, dict(feeds))
        finally:
            trace = session.end_profiling()
        try:
            events = json.loads(Path(trace).read_text())
        finally:
            Path(trace).unlink(missing_ok=True)
        graph = graph_nodes(Path(tmp) / "optimized.onnx")
    per_run = _runs(events)[warmup * len(feeds_list):]
    tokens = [_tokens(f) for f in feeds_list] * runs
    return aggregate(per_run, graph, tokens=tokens, threads=threads, model=str(model_path))


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def aggregate(per_run: Sequence[Sequence[dict]], graph=None, *, tokens: Sequence[float] = (),
              threads: int = 1, model: str = "") -> dict:
    """The profile dict from kernel events grouped by run; ``graph`` is (nodes, graph outputs)
    as :func:`assign_groups` takes them, or None to place nodes by name only.

    Keys: ``schema``, ``model``, ``threads``, ``inferences``, ``tokens_median``, ``attribution``
    (``graph`` or ``names``), ``graph_nodes`` (nodes of the optimized graph, None by name),
    ``kernels_per_inference`` (min and max over runs), ``per_inference_us``, ``depth`` (layers
    seen), ``by_layer`` (group → total_us, mean_us, median_us, share, nodes, ops: op type →
    mean_us) in
    embeddings, layer.0…, pooling/head, other order, and ``by_op`` (op type → total_us, mean_us,
    share, nodes), largest first. ``mean_*`` is per inference; shares sum to 1."""
    n = len(per_run)
    if n == 0:
        raise ExportError(f"op profile of {model or 'a model'}: the trace holds no profiled run")
    groups = assign_groups(*graph) if graph is not None else {}
    by_group: dict[str, float] = defaultdict(float)
    group_ops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    group_nodes: dict[str, set] = defaultdict(set)
    by_op: dict[str, float] = defaultdict(float)
    op_nodes: dict[str, set] = defaultdict(set)
    total = 0.0
    run_group: list[dict[str, float]] = []  # per inference, for medians robust to a preempted run
    for run in per_run:
        run_group.append(defaultdict(float))
        for e in run:
            name = e["name"][: -len(KERNEL_SUFFIX)]
            op = e.get("args", {}).get("op_name", "?")
            dur = float(e.get("dur", 0))
            g = groups.get(name)
            if g is None:
                s = scope_of(name)
                g = s if s else OTHER
            by_group[g] += dur
            run_group[-1][g] += dur
            group_ops[g][op] += dur
            group_nodes[g].add(name)
            by_op[op] += dur
            op_nodes[op].add(name)
            total += dur
    counts = [len(r) for r in per_run]
    order = sorted(by_group, key=_layer_key)
    layers = [g for g in order if g.startswith("layer.")]
    return {
        "schema": SCHEMA, "model": model, "threads": threads, "inferences": n,
        "tokens_median": float(np.median(tokens)) if len(tokens) else None,
        "attribution": "graph" if graph is not None else "names",
        "graph_nodes": len(graph[0]) if graph is not None else None,
        "kernels_per_inference": [min(counts), max(counts)],
        "per_inference_us": total / n, "depth": len(layers),
        "by_layer": {g: {"total_us": by_group[g], "mean_us": by_group[g] / n,
                         "median_us": float(np.median([r.get(g, 0.0) for r in run_group])),
                         "share": _share(by_group[g], total), "nodes": len(group_nodes[g]),
                         "ops": {op: v / n for op, v in sorted(group_ops[g].items(), key=lambda kv: -kv[1])}}
                     for g in order},
        "by_op": {op: {"total_us": v, "mean_us": v / n, "share": _share(v, total), "nodes": len(op_nodes[op])}
                  for op, v in sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0]))},
    }


def feeds_for_texts(artefact_dir, texts: Sequence[str], max_length: int | None = None) -> list[dict]:
    """One batch-1 feed per text, tokenized with the artefact's tokenizer at its real length
    (``max_length`` defaults to the artefact's, from artefact.json)."""
    from ..export.text_inputs import encode, load_tokenizer

    artefact_dir = Path(artefact_dir)
    if max_length is None:
        meta = json.loads((artefact_dir / "artefact.json").read_text())
        max_length = int(meta["max_length"])
    ids = encode(load_tokenizer(artefact_dir, max_length), texts)
    return [{"input_ids": x[None, :], "attention_mask": np.ones((1, len(x)), dtype=np.int64)} for x in ids]


def law_ms_per_layer(law, info, tokens: float, *, target=None, precision: str = "fp32") -> float:
    """The cost model's latency per encoder layer, in ms, at ``tokens`` tokens.

    The latency law's regressor is ``depth · layer_flops(backbone, tokens) + head_flops``, so a
    fitted law's layer costs ``slope · layer_flops``; a ratio (or analytic) law scales the
    analytic estimate, whose layer costs ``1e3 · layer_flops / (gflops_per_thread · 1e9 ·
    threads [· int8_speedup])`` ms, and needs the ``target``."""
    from ..search.cost import layer_flops

    flops = layer_flops(info, tokens)
    if law.mode == "fit":
        return law.slope * flops
    if target is None:
        raise ConfigError(f"slope check: the latency law is '{law.mode}', not fitted; pass the target "
                          "spec so its analytic per-layer cost can be scaled")
    est = target.estimate
    per_second = est.gflops_per_thread * 1e9 * target.threads
    if precision in ("int8-dynamic", "int8-static"):
        per_second *= est.int8_speedup
    return law.ratio * 1e3 * flops / per_second


def slope_check(profile: Mapping, law, info=None, *, tokens: float | None = None, target=None,
                precision: str = "fp32") -> dict:
    """The profile's mean kernel time per encoder layer beside the cost model's per-layer cost.

    ``law``: the target's latency :class:`~toolchain.profiling.cost_model.Law` for the
    precision (``CostModel.law(precision, "latency_ms")``), with the backbone's ``info``; or a
    number, already in ms per layer. ``tokens`` defaults to the profile's median input length.
    Returns ``profile_ms_per_layer`` (mean over layers of each layer's mean per inference),
    ``model_ms_per_layer``, ``ratio`` (profile / model: below 1 where the slope holds session
    overhead the kernels leave out, above where the profiler's per-node timing or a law that
    put per-layer cost into its intercept dominates), the same from per-inference medians
    (``profile_median_ms_per_layer``, ``ratio_median``: a run preempted by another process
    moves the mean, not the median), ``layer_ms`` (each layer's mean), ``spread`` (max/min
    layer time), ``law_mode`` and ``tokens``."""
    layers = {g: v["mean_us"] / 1e3 for g, v in profile["by_layer"].items() if g.startswith("layer.")}
    medians = [v["median_us"] / 1e3 for g, v in profile["by_layer"].items() if g.startswith("layer.")]
    if not layers:
        raise ConfigError(f"slope check of {profile.get('model') or 'a profile'}: no encoder layer in it "
                          "(a depth-0 candidate); profile a candidate with at least one layer")
    tokens = profile.get("tokens_median") if tokens is None else tokens
    if isinstance(law, (int, float)):
        model_ms, mode = float(law), "given"
    else:
        if info is None or tokens is None:
            raise ConfigError("slope check: a Law needs the backbone's BackboneInfo and the token count")
        model_ms, mode = law_ms_per_layer(law, info, tokens, target=target, precision=precision), law.mode
    per_layer, per_layer_median = float(np.mean(list(layers.values()))), float(np.mean(medians))
    return {"profile_ms_per_layer": per_layer, "profile_median_ms_per_layer": per_layer_median,
            "model_ms_per_layer": model_ms, "ratio": per_layer / model_ms if model_ms > 0 else None,
            "ratio_median": per_layer_median / model_ms if model_ms > 0 else None, "layer_ms": layers,
            "spread": max(layers.values()) / min(layers.values()) if min(layers.values()) > 0 else None,
            "law_mode": mode, "tokens": tokens}


def render_table(profile: Mapping, top: int = 8) -> str:
    """Plain-text tables for a report: time per group, then the ``top`` op types."""
    n, tok = profile["inferences"], profile.get("tokens_median")
    head = (f"ONNX Runtime kernel time, {profile['threads']} thread(s), {n} inferences"
            + (f", median {tok:g} tokens" if tok is not None else "")
            + f": {profile['per_inference_us']:.1f} us per inference")
    lines = [head, "", f"{'group':<14}{'mean us':>10}{'median us':>11}{'share':>9}{'nodes':>7}  top ops (mean us)"]
    for g, v in profile["by_layer"].items():
        ops = ", ".join(f"{op} {us:.0f}" for op, us in list(v["ops"].items())[:3])
        lines.append(f"{g:<14}{v['mean_us']:>10.1f}{v['median_us']:>11.1f}{100 * v['share']:>8.1f}%"
                     f"{v['nodes']:>7}  {ops}")
    lines += ["", f"{'op type':<24}{'mean us':>10}{'share':>9}{'nodes':>7}"]
    ops = list(profile["by_op"].items())
    for op, v in ops[:top]:
        lines.append(f"{op:<24}{v['mean_us']:>10.1f}{100 * v['share']:>8.1f}%{v['nodes']:>7}")
    if len(ops) > top:
        rest = ops[top:]
        lines.append(f"{f'({len(rest)} more)':<24}{sum(v['mean_us'] for _, v in rest):>10.1f}"
                     f"{100 * sum(v['share'] for _, v in rest):>8.1f}%{sum(v['nodes'] for _, v in rest):>7}")
    return "\n".join(lines)
