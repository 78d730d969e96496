"""Subprocess used by the store tests: appends records as fast as it can.

    python store_writer.py DB NAME N [--go FILE] [--session S] [--per-candidate K]

Without --session: appends N records with ids fixed_id(NAME, i), one transaction each.
With --session: profiles N candidates; for each one not yet done in session S, appends K records
(one "round" each) and the progress mark in one transaction, like an interrupted profile
resuming.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from store_helpers import candidate, fixed_id, make_record  # noqa: E402

from toolchain.store import RecordStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("name")
    ap.add_argument("n", type=int)
    ap.add_argument("--go")
    ap.add_argument("--session")
    ap.add_argument("--per-candidate", type=int, default=1)
    a = ap.parse_args()
    if a.go:
        while not os.path.exists(a.go):
            time.sleep(0.001)
    with RecordStore(a.db) as store:
        if a.session is None:
            for i in range(a.n):
                store.append(make_record(candidate(depth=1 + i % 6), record_id=fixed_id(a.name, i),
                                         samples=[float(i)] * 50, run_id=a.name))
            return
        cands = [candidate(depth=1 + i % 6, head_size=i) for i in range(a.n)]
        done = store.begin_session(a.session, target="host", run_id=a.name,
                                   planned=[c.id for c in cands])
        for c in cands:
            if c.id in done:
                continue
            recs = [make_record(c, record_id=fixed_id(a.session, c.id, k), samples=[1.0 + k] * 200,
                                run_id=a.name) for k in range(a.per_candidate)]
            store.append_many(recs, session_id=a.session)
            print(c.id, flush=True)
        store.finish_session(a.session)


if __name__ == "__main__":
    main()
