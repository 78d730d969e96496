"""The one owner of a run directory.

A run directory holds what one search produced and what later stages added to it::

    leaderboard.json   the typed leaderboard below (schema ``SCHEMA``)
    heads/ID.safetensors   the trained heads worth exporting (front, selection, baseline, ...)
    artefacts/ID/      exported, validated ONNX artefacts (a cache: any stage may fill it)
    report.md, *.png   rendered from the leaderboard by the flows
    COMPLETE           written last by the flow that wrote the rest: a run without it was
                       interrupted and is never taken as finished

Every stage reads the run through :class:`RunDir`: the dataset (checked against the run's
fingerprint), the candidates and their saved heads, and the selection *per target*. Only the
flows (``toolchain.flows``) write it, through :meth:`RunDir.save`.

A selection is keyed by target name and spec hash (:func:`target_key`), so that profiling a Pi
never moves the host's selection, and a bundle for one target never carries another's.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import RunDirError
from .search.candidate import PRECISIONS, VOCABS, Candidate

SCHEMA = 2
COMPLETE = "COMPLETE"
LEADERBOARD = "leaderboard.json"
SELECTION_SOURCES = ("measured", "predicted")

# Keys every leaderboard has, with their JSON type: checked on open, so that a hand-edited or
# truncated file is one clear error here rather than a KeyError three stages later.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "dataset_fingerprint": str,
    "label_names": list,
    "models": dict,
    "config": dict,
    "candidates": list,
    "selected": str,
    "target": str,
    "baseline": dict,
}


def target_key(name: str, board_hash: str) -> str:
    """The key of a target's selection: its name and the first 12 hex digits of its board hash
    (``TargetSpec.board_hash``: a changed spec is another target as far as costs go; a changed
    address is not)."""
    return f"{name}@{board_hash[:12]}"


def _migrate(board: dict, path: Path) -> dict:
    """Bring an older leaderboard to ``SCHEMA`` in memory (the file is rewritten only by a
    flow's next save)."""
    schema = board.get("schema", 1)
    if not isinstance(schema, int) or schema < 1:
        raise RunDirError(f"{path}: 'schema' is {schema!r}, not a schema number; rerun 'codesign run'")
    if schema > SCHEMA:
        raise RunDirError(
            f"{path}: written by a newer codesign (leaderboard schema {schema}, this one reads "
            f"up to {SCHEMA}); upgrade codesign ('pip install -U codesign')"
        )
    if schema == 1:
        # Schema 1 kept one co-design loop in a single slot, whatever its target.
        selections: dict[str, dict] = {}
        loop = board.pop("loop", None)
        if isinstance(loop, dict) and loop.get("target") and loop.get("selected"):
            # Schema 1 knew only the full spec hash: the board hash is recomputed when the
            # target is next profiled, so this selection serves until then under its old key.
            key = target_key(loop["target"], str(loop.get("target_hash", "")))
            selections[key] = _selection_from_loop(loop)
        board["selections"] = selections
        board["schema"] = 2
    return board


def _check_shape(board: Any, path: Path) -> dict:
    if not isinstance(board, dict):
        raise RunDirError(
            f"{path}: holds a JSON {type(board).__name__}, not a leaderboard object; rerun "
            "'codesign run' (or 'codesign search') to rewrite it"
        )
    missing = [k for k in _REQUIRED if k not in board]
    if missing:
        raise RunDirError(
            f"{path}: not a codesign leaderboard (missing {', '.join(missing)}); rerun "
            "'codesign run' (or 'codesign search') to rewrite it"
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(board[key], kind):
            raise RunDirError(
                f"{path}: '{key}' is a {type(board[key]).__name__}, expected "
                f"{getattr(kind, '__name__', kind)}; rerun 'codesign run' to rewrite it"
            )
    for i, c in enumerate(board["candidates"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), str):
            raise RunDirError(f"{path}: candidate #{i} has no id; rerun 'codesign run'")
        try:
            Candidate.from_dict(c)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(
                f"{path}: candidate #{i} ('{c['id']}') is malformed ({exc}); rerun 'codesign run'"
            ) from exc
    if not any(c["id"] == board["selected"] for c in board["candidates"]):
        raise RunDirError(
            f"{path}: the selected candidate '{board['selected']}' is not among the run's "
            f"{len(board['candidates'])} candidates; rerun 'codesign search'"
        )
    if not isinstance(board.get("selections", {}), dict):
        raise RunDirError(f"{path}: 'selections' is not an object; rerun 'codesign run'")
    return board


def _selection_from_loop(loop: dict) -> dict:
    """A target's selection entry from a co-design loop summary."""
    sel = loop.get("selected")
    row = next((v for v in loop.get("variants", []) if v.get("id") == sel), {})
    cost = row.get("cost") or {}
    return {
        "target": loop.get("target"),
        "target_hash": loop.get("target_hash"),
        "candidate_id": sel,
        "base_id": loop.get("selected_base"),
        "precision": row.get("precision"),
        "source": "measured" if cost.get("source") == "measured" else "predicted",
        "emulated": bool(cost.get("emulated", loop.get("emulated"))),
        "latency_ms": cost.get("latency_ms"),
        "model_bytes": cost.get("model_bytes"),
        "val_acc": row.get("val_acc"),
        "test_acc": loop.get("selected_test_acc"),
        "loop": loop,
    }


class RunDir:
    """A run directory, opened for reading; the flows also write it through :meth:`save`."""

    def __init__(self, path: Path, board: dict, schema_on_disk: int = SCHEMA) -> None:
        self.path = Path(path)
        self.board = board
        self.schema_on_disk = schema_on_disk

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, *, require_complete: bool = True) -> RunDir:
        path = Path(path)
        lb = path / LEADERBOARD
        if not path.is_dir():
            raise RunDirError(f"{path}: not a run directory; list runs under $CODESIGN_HOME/runs")
        if not lb.is_file():
            raise RunDirError(f"{path}: no {LEADERBOARD}; run 'codesign run' or 'codesign search' first")
        try:
            board = json.loads(lb.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RunDirError(f"{lb}: not UTF-8 (byte {exc.start}); rerun 'codesign search'") from exc
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{lb}: corrupt JSON ({exc.msg}, line {exc.lineno}); rerun 'codesign search'") from exc
        on_disk = board.get("schema", 1) if isinstance(board, dict) else 0
        if isinstance(board, dict):
            board = _migrate(board, lb)
        board = _check_shape(board, lb)
        run = cls(path, board, on_disk)
        if require_complete and not run.is_complete():
            raise RunDirError(
                f"{path}: incomplete run (no {COMPLETE} marker: the search or its report was "
                "interrupted); rerun 'codesign run' or 'codesign search' into a new run directory"
            )
        return run

    def is_complete(self) -> bool:
        if (self.path / COMPLETE).is_file():
            return True
        # Runs from before the marker existed are complete when their report and plots are.
        return self.schema_on_disk < 2 and all(
            (self.path / n).is_file() for n in ("report.md", "per_layer.png", "pareto.png")
        )

    @staticmethod
    def latest(home: Path) -> Path | None:
        """The newest complete run under ``home/runs`` (an interrupted one is skipped)."""
        runs = []
        for p in (Path(home) / "runs").glob("*"):
            if not (p / LEADERBOARD).is_file():
                continue
            try:
                RunDir.open(p)
            except RunDirError:
                continue
            runs.append(p)
        runs.sort(key=lambda p: (p / LEADERBOARD).stat().st_mtime)
        return runs[-1] if runs else None

    # ---- what the run holds ----------------------------------------------------------------
    @property
    def candidates(self) -> list[dict]:
        return self.board["candidates"]

    def entry(self, base_id: str) -> dict:
        for c in self.candidates:
            if c["id"] == base_id:
                return c
        raise RunDirError(
            f"{self.path}: candidate '{base_id}' is not in this run; list them with "
            "'codesign show RUN_DIR'"
        )

    def resolve(self, candidate_id: str) -> tuple[Candidate, str]:
        """(candidate, fp32 base id) for a candidate id or the id of any precision (or
        vocabulary: full or pruned) variant."""
        for entry in self.candidates:
            base = Candidate.from_dict(entry)
            for precision, vocab in itertools.product(PRECISIONS, VOCABS):
                cand = replace(base, precision=precision, vocab=vocab)
                if cand.id == candidate_id:
                    return cand, entry["id"]
        raise RunDirError(
            f"{self.path}: candidate '{candidate_id}' is not in this run (nor any precision "
            "variant of one); list them with 'codesign show RUN_DIR'"
        )

    def head_path(self, base_id: str) -> Path:
        return self.path / "heads" / f"{base_id}.safetensors"

    def has_head(self, base_id: str) -> bool:
        return self.head_path(base_id).is_file()

    def artefact_dir(self, candidate_id: str) -> Path:
        return self.path / "artefacts" / candidate_id

    def dataset(self):
        """The dataset the run used, sliced as then, checked against the run's fingerprint."""
        from .data.dataset import load_dataset
        from .data.presets import resolve_dataset

        cfg = self.board["config"]
        ds = load_dataset(resolve_dataset(cfg["dataset"]), cfg.get("max_per_class"),
                          cfg.get("max_eval_per_class"))
        if ds.fingerprint() != self.board["dataset_fingerprint"]:
            raise RunDirError(
                f"{self.path}: dataset '{cfg['dataset']}' changed since this run; rerun "
                "'codesign run'"
            )
        return ds

    # ---- selections per target -------------------------------------------------------------
    @property
    def selections(self) -> dict[str, dict]:
        return self.board.setdefault("selections", {})

    def selection(self, spec) -> dict | None:
        """This target's own selection (measured by the loop, or predicted for it), or None
        when it was never profiled nor predicted. Never another target's."""
        return self.selections.get(target_key(spec.name, spec.board_hash))

    def selections_by_target(self) -> dict[str, dict]:
        """Every target's selection keyed by the target's name (``name@hash`` where one name
        has selections under several board specs), without the loop's full trace."""
        names = [s["target"] for s in self.selections.values()]
        out = {}
        for key, sel in sorted(self.selections.items()):
            shown = sel["target"] if names.count(sel["target"]) == 1 else key
            out[shown] = {k: v for k, v in sel.items() if k != "loop"}
        return out

    def set_selection(self, spec, entry: dict) -> None:
        if entry.get("source") not in SELECTION_SOURCES:
            raise ValueError(f"selection source {entry.get('source')!r}")
        self.resolve(entry["candidate_id"])  # only a candidate of this run
        self.selections[target_key(spec.name, spec.board_hash)] = {
            **entry, "target": spec.name, "target_hash": spec.hash, "board_hash": spec.board_hash}

    def set_loop(self, spec, loop: dict) -> dict:
        """Record a co-design loop's outcome as its target's selection; returns the entry."""
        entry = _selection_from_loop(loop)
        if entry["candidate_id"] is None:
            self.selections.pop(target_key(spec.name, spec.board_hash), None)
            return entry
        self.set_selection(spec, entry)
        return entry

    # ---- writing (the flows only) ----------------------------------------------------------
    def save(self, render=None) -> None:
        """Write the leaderboard atomically, then ``render(run)`` (report and plots), then the
        completion marker, last."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.board["schema"] = SCHEMA
        _atomic_write(self.path / LEADERBOARD, json.dumps(self.board, indent=2).encode())
        if render is not None:
            render(self)
        _atomic_write(self.path / COMPLETE, b"complete\n")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
