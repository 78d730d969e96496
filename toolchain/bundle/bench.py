"""``codesign bench``: the bundle's own benchmark on the target (or its emulation), a JSON
report with the raw samples, a Markdown summary for CI, and a regression gate.

Noise: a CI runner (and above all qemu) shares its CPU, and interference only ever makes an
inference slower. The gate therefore compares the *minimum of block medians*: the samples are
cut into ``blocks`` consecutive blocks, each block's median is taken, and the fastest block
stands for the run. A burst of interference spoils one block, not the statistic; a real
regression slows every block. Accuracy is that of the bundle's reference set (its labels),
measured on the board in the same run.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, CodesignError, ConfigError, RegressionError, TargetError
from ..profiling.stats import median, summarize
from .deploy import LocalShell, _readlink, _runner_json, bundle_id, deploy_root
from .opening import open_bundle

log = logging.getLogger(__name__)
BENCH_SCHEMA = 1


def block_statistic(samples: list[float], blocks: int) -> tuple[float, list[float]]:
    """(min of the block medians, the block medians) of ``samples`` cut into ``blocks``."""
    if not samples:
        raise ValueError("no samples")
    blocks = max(1, min(blocks, len(samples)))
    parts = np.array_split(np.asarray(samples, dtype=float), blocks)
    medians = [median(list(p)) for p in parts if len(p)]
    return min(medians), medians


# ---- running it -----------------------------------------------------------------------------------
def run_linux_bench(
    target,
    folder: Path,
    manifest: dict,
    iterations: int,
    warmup: int,
    blocks: int,
    slowdown: float,
    shell,
) -> dict:
    spec = target.spec
    shell = shell or target.open_shell()
    args = [
        "--bench",
        str(iterations),
        "--warmup",
        str(warmup),
        "--blocks",
        str(blocks),
        "--threads",
        str(spec.threads),
    ]
    if slowdown:
        args += ["--inject-slowdown", repr(float(slowdown))]
    timeout = spec.connection.command_timeout_s
    if isinstance(shell, LocalShell):  # the host or the emulation: the folder is right here
        where, runner = "local bundle folder", str(folder.resolve() / "runner.py")
        check = _runner_json(
            shell.run(["python3", runner, "--self-check"], timeout), "the bundle's self-check"
        )
        report = _runner_json(shell.run(["python3", runner, *args], timeout), "the benchmark")
        return dict(
            report,
            where=where,
            board=shell.label,
            emulated=shell.emulated or report.get("emulated", False),
            self_check=check,
        )
    root = deploy_root(spec, shell)
    bid = bundle_id(folder)
    current = _readlink(shell, f"{root}/current")
    remote, temp = None, None
    if current:
        proc = shell.run(["cat", "--", f"{root}/current/.deploy.json"])
        try:
            if proc.returncode == 0 and json.loads(proc.stdout).get("bundle_id") == bid:
                remote, where = f"{root}/current", "deployed (current)"
        except ValueError:
            pass
    if remote is None:  # not deployed: a temporary copy, removed afterwards
        temp = shell.checked(["mktemp", "-d", "-t", "codesign-bench.XXXXXXXX"]).strip()
        remote, where = temp, "temporary upload"
    try:
        if temp:  # inside the try: a failed upload removes the temporary copy too
            for name in sorted(manifest["files"]) + ["manifest.json"]:
                shell.upload(folder / name, f"{temp}/{name}")
        check = _runner_json(
            shell.run(["python3", f"{remote}/runner.py", "--self-check"], timeout),
            "the bundle's self-check",
        )
        report = _runner_json(
            shell.run(["python3", f"{remote}/runner.py", *args], timeout), "the benchmark"
        )
    finally:
        if temp:
            try:
                shell.run(["rm", "-rf", "--", temp])
            except TargetError as exc:
                log.warning("could not remove %s on %s: %s", temp, shell.label, exc)
    return dict(report, where=where, board=shell.label, self_check=check)


def run_mcu_bench(target, folder: Path, manifest: dict, passes: int, slowdown: float) -> dict:
    from ..mcu.blob import from_blob

    art = manifest["artefact"]
    ref = manifest["self_check"].get("reference", "reference.npz")
    try:
        head = from_blob((folder / art["model"]).read_bytes())
        with np.load(folder / ref, allow_pickle=False) as z:
            inputs_q, expected_q, labels = z["inputs_q"], z["expected_q"], z["labels"]
        if not (len(inputs_q) == len(expected_q) == len(labels)) or not len(inputs_q):
            raise ValueError("inputs_q, expected_q and labels differ in length or are empty")
    except CodesignError:
        raise
    except Exception as exc:  # np.load / from_blob raise many kinds on a malformed file
        raise BundleError(
            f"bundle {folder}: {art['model']} or {ref} is malformed ({type(exc).__name__}: "
            f"{str(exc)[:120]}); rebuild the bundle with 'codesign bundle'"
        ) from exc
    rows = np.concatenate([inputs_q] * max(1, passes))
    run = target.run_head(head, rows)
    n = len(inputs_q)
    outputs = run.outputs[:n]
    exact = bool((outputs == expected_q).all())
    crc_ok = run.selfcheck_crc == int(manifest["self_check"]["firmware_selfcheck_crc32"], 16)
    if run.est_latency_ms is not None:
        samples = [float(x) * (1.0 + slowdown) for x in run.est_latency_ms]
        unit = "ms (estimated from " + run.counter_unit + ")"
    else:
        samples = [float(x) * (1.0 + slowdown) for x in run.counts]
        unit = run.counter_unit
    pred = outputs.astype(np.int64).argmax(1)
    reference = {
        "n": n,
        "int8_exact": exact,
        "firmware_selfcheck_crc_matches": crc_ok,
        "argmax_agreement": float((pred == expected_q.astype(np.int64).argmax(1)).mean()),
        "accuracy": float((pred == labels).mean()),
        "passed": exact and crc_ok,
    }
    return {
        "ok": True,
        "latency_ms_samples": samples,
        "unit": unit,
        "iterations": len(rows),
        "warmup": 0,
        "injected_slowdown": slowdown,
        "reference": reference,
        "self_check": {"ok": reference["passed"], "crc32": f"{run.selfcheck_crc:08x}"},
        "runtime": {"name": "firmware", **{k: str(v) for k, v in run.firmware.items()}},
        "where": "uploaded to the firmware",
        "board": target.spec.name,
        "emulated": run.emulated,
        "model_crc32": art.get("model_crc32"),
    }


# ---- the gate --------------------------------------------------------------------------------------
def compare(current: dict, baseline: dict, max_regression: float) -> dict:
    """Latency (min of block medians) and reference accuracy against a baseline report."""
    try:
        base_stat = float(baseline["summary"]["stat_ms"])
        base_acc = baseline["accuracy"].get("accuracy")
        if base_acc is not None:
            base_acc = float(base_acc)
        if not math.isfinite(base_stat) or base_stat < 0:
            raise ValueError(f"summary.stat_ms {base_stat}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"the baseline is not a 'codesign bench' JSON report (bad or missing {exc}); "
            "pass the --json file of an earlier bench run"
        ) from exc
    stat = current["summary"]["stat_ms"]
    ratio = stat / base_stat if base_stat > 0 else math.inf
    acc = current["accuracy"].get("accuracy")
    acc_drop = (base_acc - acc) if (acc is not None and base_acc is not None) else None
    problems = []
    if ratio > 1.0 + max_regression:
        problems.append(
            f"latency {stat:.4g} ms is {100 * (ratio - 1):.1f}% above the baseline's "
            f"{base_stat:.4g} ms (allowed {100 * max_regression:.0f}%)"
        )
    if acc_drop is not None and acc_drop > max_regression + 1e-12:
        problems.append(
            f"reference accuracy {acc:.3f} is {100 * acc_drop:.1f} points below the "
            f"baseline's {base_acc:.3f} (allowed {100 * max_regression:.0f})"
        )
    return {
        "baseline_stat_ms": base_stat,
        "stat_ms": stat,
        "latency_ratio": ratio,
        "baseline_accuracy": base_acc,
        "accuracy": acc,
        "accuracy_drop": acc_drop,
        "max_regression": max_regression,
        "baseline_bundle_id": baseline.get("bundle_id"),
        "baseline_target": baseline.get("target"),
        "regressed": bool(problems),
        "problems": problems,
    }


def render_markdown(report: dict) -> str:
    s = report["summary"]
    acc = report["accuracy"]
    unit = report.get("unit", "ms")
    lines = [
        f"### codesign bench: `{report['target']}` - candidate `{report['candidate_id']}`",
        "",
        f"Bundle `{report['bundle_id'][:12]}` on {report['board']}"
        + (" (**emulated**: timings are not the board's)" if report.get("emulated") else "")
        + f", {report['where']}.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| samples | {s['n']} ({report['blocks']} blocks) |",
        f"| latency, min of block medians | {s['stat_ms']:.4g} {unit} |",
        f"| latency median / p10 / p90 | {s['median_ms']:.4g} / {s['p10_ms']:.4g} / "
        f"{s['p90_ms']:.4g} {unit} |",
        f"| self-check | {'passed' if report['self_check_passed'] else 'FAILED'} |",
        f"| reference accuracy | {_fmt(acc.get('accuracy'))} (n={acc.get('n')}) |",
        f"| argmax agreement with the reference | {_fmt(acc.get('argmax_agreement'))} |",
    ]
    if report.get("injected_slowdown"):
        lines.append(f"| injected slowdown (test) | {100 * report['injected_slowdown']:.0f}% |")
    cmp_ = report.get("comparison")
    if cmp_:
        lines += [
            "",
            f"Against baseline `{(cmp_.get('baseline_bundle_id') or '?')[:12]}`: latency "
            f"x{cmp_['latency_ratio']:.3f}, accuracy "
            f"{_fmt(cmp_['baseline_accuracy'])} -> {_fmt(cmp_['accuracy'])}, allowed "
            f"{100 * cmp_['max_regression']:.0f}%.",
            "",
            ("**REGRESSION**: " + "; ".join(cmp_["problems"]))
            if cmp_["regressed"]
            else "No regression.",
        ]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def bench(
    target,
    bundle_path: Path,
    baseline: Path | dict | None = None,
    max_regression: float = 0.10,
    *,
    iterations: int | None = None,
    warmup: int = 10,
    blocks: int = 5,
    inject_slowdown: float = 0.0,
    json_out: Path | None = None,
    markdown_out: Path | None = None,
    shell=None,
    allow_unsigned: bool = False,
) -> dict[str, Any]:
    """Benchmark ``bundle_path`` on ``target``; write the JSON/Markdown reports when asked;
    raise RegressionError (after writing them) when the self-check fails or latency or
    accuracy regress beyond ``max_regression`` against ``baseline``."""
    if not 0 <= max_regression < 10:
        raise ConfigError(f"--max-regression {max_regression} must be a fraction like 0.10")
    for name, value, low in (
        ("--iterations", iterations, 1),
        ("--warmup", warmup, 0),
        ("--blocks", blocks, 1),
    ):
        if value is not None and (not isinstance(value, int) or value < low or value > 10**6):
            raise ConfigError(f"{name} {value} must be a whole number from {low} to 1000000")
    if not (isinstance(inject_slowdown, (int, float)) and 0 <= inject_slowdown < 100):
        raise ConfigError(f"--inject-slowdown {inject_slowdown} must be a fraction >= 0")
    if isinstance(baseline, (str, Path)):
        path = Path(baseline)
        try:
            baseline = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"baseline {path} is not readable JSON ({exc}); pass the --json "
                "file of an earlier 'codesign bench'"
            ) from exc
        if not isinstance(baseline, dict):
            raise ConfigError(
                f"baseline {path} holds {type(baseline).__name__}, not a 'codesign bench' "
                "report; pass the --json file of an earlier bench run"
            )
    spec = target.spec
    with open_bundle(bundle_path, allow_unsigned=allow_unsigned) as (folder, manifest, trust):
        if manifest["target"]["name"] != spec.name:
            raise BundleError(
                f"bundle {bundle_path} was built for target '{manifest['target']['name']}', "
                f"not '{spec.name}'; build one with 'codesign bundle --target {spec.name}'"
            )
        runtime = manifest["artefact"]["runtime"]
        if runtime != getattr(target, "bundle_runtime", None):
            raise BundleError(
                f"bundle {bundle_path} is a {runtime} bundle, but '{spec.name}' (kind "
                f"'{target.kind}') runs {getattr(target, 'bundle_runtime', 'no')} bundles; "
                f"rebuild it with 'codesign bundle --target {spec.name}'"
            )
        bid = bundle_id(folder)
        raw = target.bench(folder, manifest, iterations=iterations or target.bench_iterations,
                           warmup=warmup, blocks=blocks, slowdown=inject_slowdown, shell=shell)
    samples = [float(x) for x in raw["latency_ms_samples"]]
    stat, block_medians = block_statistic(samples, blocks)
    summary = dict(
        summarize(samples).to_dict(),
        stat_ms=stat,
        block_medians_ms=block_medians,
        statistic="min of block medians",
    )
    reference = raw.get("reference") or {}
    report = {
        "schema": BENCH_SCHEMA,
        "kind": "codesign-bench",
        "target": spec.name,
        "target_hash": spec.hash,
        "bundle_id": bid,
        "candidate_id": manifest["candidate_id"],
        "candidate": manifest.get("candidate_description"),
        "board": raw.get("board"),
        "where": raw.get("where"),
        "emulated": bool(raw.get("emulated")),
        "unit": raw.get("unit", "ms"),
        "iterations": raw.get("iterations"),
        "warmup": raw.get("warmup"),
        "blocks": len(block_medians),
        "injected_slowdown": inject_slowdown,
        "runtime": raw.get("runtime"),
        "load_ms": raw.get("load_ms"),
        "latency_ms_samples": samples,
        "summary": summary,
        "accuracy": reference,
        "self_check": raw.get("self_check"),
        "self_check_passed": bool((raw.get("self_check") or {}).get("ok"))
        and bool(reference.get("passed", True)),
        "manifest": {"val_acc": manifest.get("val_acc"), "measured": manifest.get("measured")},
        "generated_at": datetime.now(timezone.utc).isoformat(),
    }
    report["signature"] = trust.to_dict()
    report["comparison"] = (
        compare(report, baseline, max_regression) if baseline is not None else None
    )
    report["passed"] = report["self_check_passed"] and not (
        report["comparison"] and report["comparison"]["regressed"]
    )
    for out, text in (
        (json_out, lambda: json.dumps(report, indent=2) + "\n"),
        (markdown_out, lambda: render_markdown(report)),
    ):
        if out:
            try:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                Path(out).write_text(text())
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the report {out} ({exc.strerror or exc}); pass a writable path"
                ) from exc
    if not report["self_check_passed"]:
        raise RegressionError(
            f"bench of bundle {bid[:12]} on '{spec.name}': the self-check "
            "failed; the bundle does not reproduce its reference outputs there"
        )
    if report["comparison"] and report["comparison"]["regressed"]:
        raise RegressionError(
            f"bench of bundle {bid[:12]} on '{spec.name}' regressed against the baseline: "
            + "; ".join(report["comparison"]["problems"])
            + "; fix the regression or, if intended, refresh the baseline file"
        )
    return report


__all__ = ["bench", "block_statistic", "compare", "render_markdown"]
