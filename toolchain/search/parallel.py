"""Fit the search's candidates on several cores.

Each head fit runs on one thread (a second thread only adds synchronisation for matrices this
small), so a search on N cores runs N fits at once in worker processes. Workers are forked after
the parent has standardised every layer, so the feature bank is shared copy-on-write instead of
being reloaded or pickled per worker. Candidates are handed out by feature set (all heads of one
layer combination go to the same worker, which builds the combined inputs once) and largest
first, so that the long concatenation fits do not end up last on one core.

Every fit is seeded on its own, so the results do not depend on the number of workers or on the
order in which they finish (the tests check this).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from .candidate import Candidate
from .fit import FeatureBank, FittedCandidate, fit_candidate

log = logging.getLogger(__name__)

# The banks a forked worker inherits; set only while a pool is open.
_BANKS: dict[tuple[str, int], FeatureBank] = {}

# Below this many training rows × candidates a pool's start-up costs more than it saves.
_MIN_WORK_FOR_POOL = 2_000_000


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(n_candidates: int, n_train: int) -> int:
    """One process for small searches (the demo, the tests), otherwise every usable core."""
    if n_candidates * n_train < _MIN_WORK_FOR_POOL or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(usable_cores(), 8))


def _bank_key(cand: Candidate) -> tuple[str, int]:
    return (cand.backbone, cand.max_length)


def _groups(cands: list[Candidate], banks: dict) -> list[list[Candidate]]:
    """Candidates grouped by feature set, the widest inputs first (longest fits first)."""
    groups: dict[tuple, list[Candidate]] = {}
    for cand in cands:
        groups.setdefault((_bank_key(cand), cand.feature_key), []).append(cand)

    def width(group: list[Candidate]) -> int:
        cand = group[0]
        dim = banks[_bank_key(cand)].features.dim
        return dim * (len(cand.layers) if cand.combine == "concat" else 1) * len(group)

    return sorted(groups.values(), key=width, reverse=True)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _fit_group(cands: list[Candidate], seed: int) -> list[FittedCandidate]:
    bank = _BANKS[_bank_key(cands[0])]
    # Keep one feature set's combined inputs at a time (an SST-2 concatenation is ~300 MB).
    bank.forget({cands[0].feature_key})
    return [fit_candidate(cand, bank, seed) for cand in cands]


def _prepare(banks: dict[tuple[str, int], FeatureBank], cands: list[Candidate]) -> None:
    """Standardise every layer the candidates use, once, in the parent (shared after fork)."""
    used = {(_bank_key(c), c.pooling, layer) for c in cands for layer in c.layers}
    for key, pooling, layer in sorted(used):
        for split in banks[key].y:
            banks[key].layer(split, pooling, layer)


def _prepared_fits(banks: dict[tuple[str, int], FeatureBank], cands: list[Candidate]) -> bool:
    """Whether ``_prepare``'s standardised layers (every split) stay within each bank's budget."""
    used: dict[tuple[str, int], set] = {}
    for c in cands:
        used.setdefault(_bank_key(c), set()).update((c.pooling, la) for la in c.layers)
    for key, layers in used.items():
        bank = banks[key]
        if bank.memory_budget_bytes is None:
            continue
        rows = sum(len(v) for v in bank.y.values())
        if len(layers) * rows * bank.features.dim * 4 > bank.memory_budget_bytes:
            return False
    return True


def fit_all(cands: list[Candidate], banks: dict[tuple[str, int], FeatureBank], seed: int,
            jobs: int, advance: Callable[[int], None]) -> list[FittedCandidate]:
    """Fit every candidate; returns them in the order given.

    Candidates over their bank's memory budget are fitted streamed, one at a time in this
    process (each already reads every block once; forked copies would only compete for RAM).
    The pool needs every used layer standardised up front, so it is used only when those fit
    in the budget too."""
    streams = {c.id: banks[_bank_key(c)].streams(c) for c in cands}
    streamed = [c for c in cands if streams[c.id]]
    rest = [c for c in cands if not streams[c.id]]
    if jobs > 1 and not _prepared_fits(banks, rest):
        log.info("the standardised layers of %d candidates exceed the memory budget: one process", len(rest))
        jobs = 1
    by_id: dict[str, FittedCandidate] = {}
    for cand in streamed + (rest if jobs <= 1 else []):
        bank = banks[_bank_key(cand)]
        bank.forget({cand.feature_key})
        by_id[cand.id] = fit_candidate(cand, bank, seed)
        advance(1)
    if jobs <= 1 or not rest:
        return [by_id[c.id] for c in cands]

    global _BANKS
    _prepare(banks, rest)
    _BANKS = banks
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(_fit_group, group, seed) for group in _groups(rest, banks)]
            for fut in as_completed(futures):
                done = fut.result()
                by_id.update((fc.candidate.id, fc) for fc in done)
                advance(len(done))
    finally:
        _BANKS = {}
    log.info("fitted %d candidates in %d processes", len(by_id), jobs)
    return [by_id[c.id] for c in cands]
