"""Property: whatever a target file holds (any key of the schema, any TOML type or value), loading
it gives a spec inside every stated range, or a one-line CodesignError naming the file; never
another exception (a ZeroDivisionError, a TypeError from a comparison, an OverflowError)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from toolchain.config import target_spec as ts
from toolchain.errors import CodesignError

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis for the property test")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _toml_str(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped (JSON's surrogate
    pairs are not TOML, so characters are written raw, as UTF-8)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(v) -> str:
    """A TOML inline value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


_SCALAR = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    # Values that are valid somewhere, so that many drawn files get past the type checks.
    st.sampled_from(["local", "ssh", "serial", "emulated", "labgrid", "x86_64", "aarch64", "onnxruntime",
                     "firmware", "CPU", "CUDA", "qemu-user", "qemu-system", "cortex-a72", "pty", "",
                     "host", "debian-bookworm-arm64", "mps2-an386"]),
    st.sampled_from([0, 1, -1, 22, 65535, 65536, 1024, 1025, 0.0, -0.0, 0.5, 1e308, 2**63 - 1]),
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
# What a key's value is drawn from: mostly numbers and plausible strings (to reach the range
# checks), sometimes anything (to reach the type checks).
_FIELD = st.one_of(
    st.integers(-10, 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    _SCALAR,
    _VALUE,
)
_TABLES = {name: [f.name for f in dataclasses.fields(cls)]
           for name, cls in (("connection", ts.Connection), ("budgets", ts.Budgets),
                             ("estimate", ts.Estimate), ("emulation", ts.Emulation), ("mcu", ts.Mcu),
                             ("labgrid", ts.Labgrid))}
_RUNTIME = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["onnxruntime", "tflite", "torch", "firmware"]) | _VALUE,
                  "provider": _FIELD, "version": _FIELD})


@st.composite
def target_files(draw) -> str:
    top = draw(st.dictionaries(st.sampled_from(["name", "kind", "arch", "description", "threads"]),
                               _FIELD, max_size=4))
    if draw(st.booleans()):
        top["runtimes"] = draw(st.lists(_RUNTIME, max_size=2) | _VALUE)
    for table, keys in _TABLES.items():
        if draw(st.booleans()):
            top[table] = draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), _FIELD,
                                              max_size=3) | _VALUE)
    top.setdefault("kind", "local")
    top.setdefault("arch", "x86_64")
    return "".join(f"{_toml_str(k)} = {_toml_value(v)}\n" for k, v in top.items())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=target_files())
def test_any_target_file_loads_or_raises_a_codesign_error(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    try:
        spec = ts.load_target_spec(path, apply_env=False)
    except CodesignError as exc:
        msg = str(exc)
        assert "fuzz.toml" in msg and "\n" not in msg, msg
    else:
        assert ts.spec_problem(spec) == ""
        assert spec.hash  # a loaded spec can be hashed (every record carries the hash)


def test_the_generator_reaches_valid_and_out_of_range_files(tmp_path):
    """The property is not vacuous: drawn files include ones that load and ones stopped by a range."""
    from hypothesis import find

    def loads(text):
        (tmp_path / "f.toml").write_text(text, encoding="utf-8")
        try:
            ts.load_target_spec(tmp_path / "f.toml", apply_env=False)
            return "ok"
        except CodesignError as exc:
            return str(exc)

    settings_ = settings(max_examples=2000, deadline=None, database=None)
    assert find(target_files(), lambda t: loads(t) == "ok", settings=settings_)
    assert find(target_files(), lambda t: "; use an integer" in loads(t) or "; use a number" in loads(t),
                settings=settings_)
