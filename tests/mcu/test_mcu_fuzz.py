"""Bounded fuzz of the firmware's command parser (posix build, under ASan/UBSan when available):
random byte streams must never crash or hang it, and it must answer a fresh ping afterwards."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis to fuzz the parser")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mcu_helpers import PipePort, make, start_pipe_firmware, stop  # noqa: E402

from toolchain.boards.serial_link import SerialLink  # noqa: E402
from toolchain.mcu import protocol as P  # noqa: E402

COMMAND_WORDS = [
    b"name",
    b"profile",
    b"db",
    b"db load",
    b"infer",
    b"results",
    b"ping",
    b"version",
    b"mload",
    b"mdata",
    b"commit",
    b"selfcheck",
    b"calib",
    b"load",
    b"tload",
    b"tdata",
    b"tinfer",
]
token = st.one_of(
    st.sampled_from(COMMAND_WORDS),
    st.binary(max_size=12),
    st.integers(-5, 2**33).map(lambda n: str(n).encode()),
    st.binary(max_size=40).map(lambda b: b.hex().encode()),
    st.sampled_from([b" ", b"%", b"\r\n", b"\x00", b"%%"]),
)
stream = st.lists(token, max_size=30).map(b" ".join) | st.binary(max_size=700)


@pytest.fixture(scope="module")
def asan_fw(tmp_path_factory):
    """The posix firmware under AddressSanitizer/UBSan when the compiler supports it."""
    out = tmp_path_factory.mktemp("asan")
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=all -g"
    probe = subprocess.run(
        f"echo 'int main(void){{return 0;}}' | cc {flags} -x c - -o {out}/probe",
        shell=True,
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0:
        make(out, "posix", HOST_CC=f"cc {flags}")
    else:
        make(out, "posix")
    return out / "posix" / "codesign-fw"


@contextmanager
def sanitized_firmware(binary):
    """The ASan/UBSan firmware on a pipe; on leaving, its stdin is closed and it must exit 0
    (a sanitizer report or a leak makes it exit non-zero, shown with the end of its stderr)."""
    proc = start_pipe_firmware(binary)
    try:
        yield proc
    finally:
        proc.stdin.close()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise
        stderr = proc.stderr.read().decode(errors="replace")
    assert rc == 0, stderr[-2000:]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(stream, min_size=1, max_size=4))
def test_fuzz_parser_never_crashes_or_hangs(asan_fw, data):
    with sanitized_firmware(asan_fw) as proc:
        link = SerialLink("pipe://fuzz", port=PipePort(proc), timeout_s=1.0, retries=1)
        for chunk in data:
            link._write(chunk)
            # Still alive and in step: answers a fresh ping after the garbage.
            link.sync()
            assert proc.poll() is None
        assert link.command("version")[0].startswith(f"m-version-[proto={P.PROTOCOL_VERSION};")


@pytest.fixture(scope="module")
def whole_blob():
    """A small real whole model: MiniLM's embeddings over a vocabulary pruned to a few texts
    (unseen pieces become [UNK]), a synthetic softmax head on its 384 features."""
    import json

    import numpy as np
    from mcu_helpers import softmax_head

    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json
    from toolchain.features.backbone import packaged_model_dir
    from toolchain.mcu import quantize_head
    from toolchain.mcu.depth0 import load_embeddings, quantize_depth0
    from toolchain.mcu.depth0_blob import to_whole_blob
    from toolchain.mcu.vocab_table import table_from_tokenizer_json

    model_dir = packaged_model_dir()
    pruning = prune_for_texts(model_dir / "tokenizer.json", ["how far is it to the moon ?"])
    doc = remap_tokenizer_json(json.loads((model_dir / "tokenizer.json").read_text("utf-8")), pruning)
    layers, x, _ = softmax_head(np.random.default_rng(3), n_in=384, n_cls=6)
    head = quantize_head(layers, x)
    emb = load_embeddings(model_dir, pruning.kept)
    tables = quantize_depth0(emb, 64, np.zeros(384), np.full(384, 0.5), head.input_scale,
                             head.input_zero_point)
    return to_whole_blob(table_from_tokenizer_json(doc), tables, head)


text_stream = st.lists(
    st.one_of(
        st.binary(max_size=300).map(lambda b: ("text", b)),
        st.tuples(st.integers(0, 3000), st.binary(min_size=1, max_size=200)).map(lambda t: ("raw", t)),
        stream.map(lambda b: ("bytes", b)),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=text_stream)
def test_fuzz_text_commands_with_a_whole_model(asan_fw, whole_blob, data):
    """With a whole model committed: arbitrary bytes as text (valid uploads) always classify,
    and tload/tdata lines at random offsets or garbage around them never crash or hang it."""
    with sanitized_firmware(asan_fw) as proc:
        link = SerialLink("pipe://fuzz", port=PipePort(proc), timeout_s=2.0, retries=1)
        link.handshake()
        link.upload_model(whole_blob)
        for kind, item in data:
            if kind == "text":
                link.exchange(P.tload_command(item))
                for off in range(0, len(item), 100):
                    link.exchange(P.tdata_command(off, item[off : off + 100]))
                done = P.find_line(link.exchange(P.CMD_TINFER), "m-tinfer-done-")
                assert 2 <= int(P.parse_fields(done, "tinfer-done")["tokens"]) <= 64
            elif kind == "raw":
                off, chunk = item
                link._write(P.tdata_command(off, chunk).encode() + P.TERMINATOR)
                link.sync()
            else:
                link._write(item)
                link.sync()
            assert proc.poll() is None
        assert link.command("version")[0].startswith(f"m-version-[proto={P.PROTOCOL_VERSION};")
