"""``codesign bundle``: a target's own selection into a signed bundle.

A target that was profiled has a measured selection in the run. One that never was gets the
selection *predicted for it* (its budgets, its cost model or calibration), which is saved in the
run as that target's, marked ``predicted``, so that ``codesign show`` says so. Never another
target's selection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import SearchError
from ..report.write import render
from ..rundir import RunDir
from ..search.candidate import Candidate


def ensure_selection(run_dir: Path, target, store) -> dict:
    """This target's selection in the run, predicting (and saving) one when it has none."""
    from .loop import predict_selection

    run = RunDir.open(run_dir)
    spec = target.spec
    sel = run.selection(spec)
    if sel is not None:
        return sel
    if target.measures == "head":
        # A microcontroller runs the int8 head of the search's choice until it is profiled.
        base = run.entry(run.board["selected"])
        cand = replace(Candidate.from_dict(base), precision="int8-head")
        sel = {"candidate_id": cand.id, "base_id": base["id"], "precision": "int8-head",
               "source": "predicted", "emulated": False, "latency_ms": None,
               "model_bytes": None, "val_acc": base["val_acc"]}
    else:
        sel = predict_selection(run.path, target, store)
        if sel is None:
            raise SearchError(
                f"no candidate of {run.path} fits target '{spec.name}' by prediction (its "
                "budgets in the target file); profile it, relax its budgets, or pass --candidate"
            )
    run.set_selection(spec, sel)
    run.save(render)
    return run.selection(spec)


def bundle_for_target(run_dir: Path, target, out_dir: Path, *, candidate_id: str | None = None,
                      allow_unmeasured: bool = False, key=None, store=None) -> Path:
    """Build ``out_dir/<target>-<candidate>/`` (and its .tar.gz) from the target's selection."""
    from ..bundle.build import build_bundle
    from ..store.db import RecordStore

    own = store is None
    store = store if store is not None else RecordStore()
    try:
        if candidate_id is None:
            ensure_selection(Path(run_dir), target, store)
        return build_bundle(Path(run_dir), target.spec, Path(out_dir), candidate_id=candidate_id,
                            allow_unmeasured=allow_unmeasured, key=key, store=store)
    finally:
        if own:
            store.close()
