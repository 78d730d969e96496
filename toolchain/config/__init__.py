"""Typed, frozen specs read from TOML files and range-checked at the edge.

The lowest layer after ``errors``/``paths``: the search, the cost model and the boards all read a
``TargetSpec``, so it lives below every one of them."""
