"""Fixtures for the end-to-end tests: a tiny run with saved softmax and ELM heads, the MCU
tool checks, and the SSH stand-in board reused from tests/ssh (loaded, not edited).

The stand-in board needs root (netns, sshd) and an arm64 rootfs: set CODESIGN_ROOTFS_CACHE to
a prebuilt one, or the first SSH test builds it (~1.5 min, as tests/ssh does).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SSH_TESTS = HERE.parent / "ssh"

# tests/ssh/conftest.py imports ssh_helpers by bare name; load it under its own module name so
# its fixtures (emulation_tools, rootfs, rootfs_env, board) serve these tests too.
if str(SSH_TESTS) not in sys.path:
    sys.path.insert(0, str(SSH_TESTS))
_spec = importlib.util.spec_from_file_location("_codesign_ssh_fixtures", SSH_TESTS / "conftest.py")
_ssh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ssh)
emulation_tools = _ssh.emulation_tools
rootfs = _ssh.rootfs
rootfs_env = _ssh.rootfs_env
board = _ssh.board

N_EVAL_PER_CLASS = 55  # 110 validation examples: the MCU profile runs >= 100 of them


def _write_dataset(folder: Path, rows_fn) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows_fn(24), "dev": rows_fn(N_EVAL_PER_CLASS, 1000),
              "test": rows_fn(8, 2000)}
    for name, rows in splits.items():
        body = "".join(f"{t}\t{lab}\n" for t, lab in rows)
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + body, encoding="utf-8")
    spec = folder / "toy110.toml"
    spec.write_text(
        'name = "toy110"\nformat = "tsv"\ntrain = "train.tsv"\nvalidation = "dev.tsv"\n'
        'test = "test.tsv"\ntext_field = "sentence"\nlabel_field = "label"\n', encoding="utf-8")
    return spec


@pytest.fixture(scope="session")
def session_run(tmp_path_factory, tiny_bert, toy_rows) -> Path:
    """One tiny run (tiny random BERT, 5 combinations, softmax-3 and ELM-64 heads), built in
    its own CODESIGN_HOME; tests copy it (see ``tiny_run``)."""
    from toolchain.flows.run import RunConfig, run

    base = tmp_path_factory.mktemp("integration-run")
    spec = _write_dataset(base / "data", toy_rows)
    mp = pytest.MonkeyPatch()
    mp.setenv("CODESIGN_HOME", str(base / "home"))
    mp.setenv("CODESIGN_NO_PROGRESS", "1")
    try:
        config = RunConfig(models=(str(tiny_bert),), dataset=str(spec), max_combinations=5,
                           heads=(("softmax", 3), ("elm", 64)), run_dir=str(base / "run"))
        run_dir, board = run(config)
        _save_elm_heads(config, board, run_dir)
    finally:
        mp.undo()
    return run_dir


def _save_elm_heads(config, board: dict, run_dir: Path) -> None:
    """The search keeps only the front, the selection and the best head per depth, and on this
    toy task those are all softmax heads. Refit two ELM-64 candidates of the run exactly as the
    search fits them (same features, standardizers, seed), one with a learned scalar mix, and
    save them beside the others, so the MCU runs a two-layer head with a ReLU hidden layer."""
    from toolchain.flows.run import extract
    from toolchain.search.candidate import Candidate
    from toolchain.search.fit import FeatureBank, fit_candidate

    elms = [c for c in board["candidates"] if c["head"] == "elm"]
    picks = sorted(elms, key=lambda c: (c["combine"] != "scalarmix", -c["val_acc"]))[:1]
    picks += sorted((c for c in elms if c not in picks), key=lambda c: -c["val_acc"])[:1]
    ex = extract(config)
    y = {s: ex.dataset.split(s).labels for s in ("train", "validation")}
    for entry in picks:
        cand = Candidate.from_dict(entry)
        bank = FeatureBank(ex.features[(cand.backbone, cand.max_length)], y, ex.dataset.n_classes)
        fitted = fit_candidate(cand, bank, config.seed)
        assert abs(fitted.val_acc - entry["val_acc"]) < 1e-9, "refit differs from the search"
        fitted.save(run_dir / "heads" / f"{cand.id}.safetensors")


@pytest.fixture
def tiny_run(session_run, tmp_path) -> Path:
    """A private copy of the session's run (profiling writes into the run directory)."""
    dest = tmp_path / "run"
    shutil.copytree(session_run, dest)
    return dest
