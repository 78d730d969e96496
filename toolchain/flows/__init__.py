"""The flows: the only code that writes a run directory or re-renders its report.

``run`` (extract → search → leaderboard), ``loop`` (the co-design loop on one board),
``profile`` (what ``codesign profile`` does on any board, one or many), ``bundle`` (a target's
own selection, measured or predicted, into a signed bundle)."""
