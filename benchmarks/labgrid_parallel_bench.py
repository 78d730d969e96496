"""Two labgrid boards profiled in parallel vs one board alone: the wall-time ratio.

Issue 12 asks that two stand-in boards profiled in parallel through one labgrid environment take
at most 1.5x the wall time of one board. Timings belong here, not in a test (machines are
noisy): this starts two stand-in boards (tests/boards: sshd in its own network namespace, an
emulated aarch64 python3), describes them in one local labgrid environment (no coordinator),
builds a tiny run, and times the same profile on board-a alone and on both boards at once (the
flow of ``codesign profile --target A --target B``: one worker thread per board), alternating
the two ``--repeats`` times. It prints each time, the ratio of the medians, and the CPU model
and load, because the stand-in boards' "CPUs" are the host's own: with fewer free cores than
boards the ratio measures the host, not codesign. So each board's
sshd (and with it every emulated python3 it starts) is pinned to a core of its own, as each real
board has its own CPU (``--no-pin`` to let them share); the host side (export checks, ssh
clients, labgrid) runs anywhere.

Needs root (netns, sshd) and an arm64 rootfs (CODESIGN_ROOTFS_CACHE, or it is built, ~2 min):

    sudo CODESIGN_ROOTFS_CACHE=/path .venv/bin/python benchmarks/labgrid_parallel_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "boards")]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _tiny_run(work: Path) -> Path:
    import importlib.util

    from toolchain.flows.run import RunConfig, run

    # tests/conftest.py by path: other folders on sys.path have a conftest module too.
    spec = importlib.util.spec_from_file_location("_codesign_tests_root", ROOT / "tests" / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    save_tiny_bert, write_toy_dataset = helpers.save_tiny_bert, helpers.write_toy_dataset

    model = save_tiny_bert(work / "models" / "tiny")
    spec = write_toy_dataset(work / "data")
    run_dir, _ = run(RunConfig(models=(str(model),), dataset=str(spec), max_combinations=4,
                               heads=(("softmax", 3),), run_dir=str(work / "run")))
    return run_dir


def _profile(run_dir: Path, targets, heads, iterations: int, db: Path) -> float:
    """Wall seconds for every target to profile ``heads`` through ``codesign profile``'s own
    many-boards flow (one worker thread per board)."""
    from toolchain.flows.profile import ProfileOptions, profile_boards

    options = ProfileOptions(candidates=tuple(heads), precisions=("fp32",), warmup=2, iterations=iterations,
                             passes=1)
    started = time.perf_counter()
    outcomes = profile_boards(run_dir, targets, options, db_path=db)
    elapsed = time.perf_counter() - started
    failed = [f"{o.name}: {o.error}" for o in outcomes if not o.ok]
    if failed:
        raise SystemExit("board(s) failed: " + "; ".join(failed))
    for o in outcomes:
        assert len(o.records) == len(heads), (o.name, o.records)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=2, help="candidates profiled per board")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-pin", action="store_true", help="do not give each board a core")
    args = parser.parse_args()

    from board_helpers import start_stand_in, write_env, write_target

    from toolchain.boards.emulation import prepare_rootfs
    from toolchain.boards.registry import open_target
    from toolchain.export.artefact import export_artefact

    work = Path(tempfile.mkdtemp(prefix="codesign-lg-bench-"))
    os.environ["CODESIGN_HOME"] = str(work / "home")
    os.environ["CODESIGN_NO_PROGRESS"] = "1"
    boards = {}
    try:
        rootfs = prepare_rootfs()
        run_dir = _tiny_run(work)
        heads = sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))[:args.heads]
        for head in heads:  # exported once: the timings are the boards', not the exporter's
            export_artefact(run_dir, head, "fp32")
        for name in ("board-a", "board-b"):
            boards[name] = start_stand_in(rootfs, work / name)
        cores = sorted(os.sched_getaffinity(0))
        pinned = not args.no_pin and len(cores) >= len(boards)
        if pinned:  # `ip netns exec` execs sshd: the Popen pid is sshd's; children inherit it
            for core, board in zip(cores[-len(boards):], boards.values(), strict=True):
                os.sched_setaffinity(board.sshd.pid, {core})
        env = write_env(work / "farm.yaml", boards)
        targets = {name: open_target(str(write_target(
            work, name, env=env.name, lg_target=name, key=str(b.key),
            known_hosts=str(b.known_hosts)))) for name, b in boards.items()}
        for t in targets.values():
            t.prepare()  # labgrid: power on, strategy to shell (not part of the timing)
        _profile(run_dir, list(targets.values()), heads[:1], 2, work / "warmup.db")
        single, both = [], []
        for i in range(args.repeats):  # alternated, so load drift hits both alike
            single.append(_profile(run_dir, [targets["board-a"]], heads, args.iterations,
                                   work / f"single-{i}.db"))
            both.append(_profile(run_dir, list(targets.values()), heads, args.iterations,
                                 work / f"both-{i}.db"))
        for t in targets.values():
            t.close()
        ratio = statistics.median(both) / statistics.median(single)
        figures = {
            "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "loadavg_1m_5m_15m": list(os.getloadavg()),
            "boards_pinned_to_own_core": pinned,
            "heads_per_board": len(heads), "iterations": args.iterations,
            "single_board_s": [round(x, 2) for x in single],
            "two_boards_parallel_s": [round(x, 2) for x in both],
            "ratio_parallel_over_single": round(ratio, 3),
        }
        print(f"CPU: {figures['cpu_model']} ({figures['cpus']} CPUs, load "
              f"{', '.join(f'{x:.2f}' for x in figures['loadavg_1m_5m_15m'])}); boards "
              f"{'pinned to a core each' if pinned else 'sharing the cores'}")
        print(f"one board: {figures['single_board_s']} s; two boards in parallel: "
              f"{figures['two_boards_parallel_s']} s")
        print(f"ratio (median parallel / median single): {ratio:.2f} "
              f"({'within' if ratio <= 1.5 else 'over'} the 1.5x bar)")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        for board in boards.values():
            board.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
