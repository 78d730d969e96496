"""Bad backbone folders, impossible lengths and an extraction killed mid-write, through the real
``codesign extract``. Each model folder is a tiny random BERT (``save_tiny_bert`` of
tests/conftest.py) saved in the case's folder and then broken; the one line names the file or
value, what is allowed and the fix, and neither the folder nor ``$CODESIGN_HOME`` gains a file
or a folder (no orphan cache folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, fixtures, left_behind, snapshot

_TESTS = Path(__file__).resolve().parents[1]
_ROOT = _TESTS.parent


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _tree(folder: Path) -> dict[str, int]:
    """snapshot() plus every folder (as 'name/'): an empty cache folder is left behind too."""
    out = snapshot(folder)
    if folder.exists():
        out.update({f"{p.relative_to(folder)}/": 0 for p in folder.rglob("*") if p.is_dir()})
    return out


def _setup(tmp: Path) -> tuple[Path, Path]:
    fx = fixtures()
    return fx.write_toy_dataset(tmp / "data"), fx.save_tiny_bert(tmp / "model")


def _extract(max_length: int = 32) -> list:
    return ["extract", "--dataset", "data/toy.toml", "--model", "model", "--max-length", max_length]


def _json_edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _refused(breaks, expect: str, *also: str, max_length: int = 32, env: dict | None = None):
    """A case: break the model folder with ``breaks(model)``, run extract, expect one line."""

    def run(tmp: Path) -> Outcome:
        _, model = _setup(tmp)
        breaks(model)
        before, home_before = _tree(tmp), _tree(_home())
        msg = cli_error(_extract(max_length), expect=expect, env=env)
        for needle in also:
            assert needle.lower() in msg.lower(), f"{needle!r} not in {msg!r}"
        left = left_behind(before, _tree(tmp))
        left_behind(home_before, _tree(_home()))
        return Outcome(msg, left)

    return run


def _no_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()


def _no_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink()


def _truncated_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _unchanged(model: Path) -> None:
    pass


CMD = "codesign extract --dataset toy.toml --model model --max-length"

# --- interrupted work ---------------------------------------------------------------------------

# `codesign extract` in a child process that SIGKILLs itself while writing chunk KILL_AFTER + 1
# (its bytes in the temp file, fsync under way): deterministic, exactly KILL_AFTER chunks survive.
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)  # every run of this case computes with one thread: the same bits
    kill_after, chunks, real_fsync = int(sys.argv[1]), [0], os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".safetensors" in name and name.endswith(".tmp"):
            if chunks[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            chunks[0] += 1
        real_fsync(fd)

    if kill_after >= 0:
        os.fsync = fsync
    from toolchain.cli import main
    main(sys.argv[2:], prog_name="codesign")
    """
)
KILL_AFTER = 4
TOTAL_CHUNKS = 6 + 2 + 2  # 48 train, 16 dev, 16 test rows in chunks of 8


def _cli_process(tmp: Path, home: Path, kill_after: int, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODESIGN_HOME": str(home), "CODESIGN_CHUNK_SIZE": "8",
           "CODESIGN_NO_PROGRESS": "1", "PYTHONPATH": str(_ROOT)}
    return subprocess.run([sys.executable, "-c", _KILLER, str(kill_after), *map(str, args)], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _killed_then_rerun(tmp: Path) -> Outcome:
    _setup(tmp)
    home = _home()
    killed = _cli_process(tmp, home, KILL_AFTER, *_extract())
    assert killed.returncode == -signal.SIGKILL, f"not killed: {killed.returncode} {killed.stderr[-2000:]}"
    (cache,) = (home / "cache" / "features").iterdir()
    kept = {p.name: p.stat().st_ino for p in cache.glob("*.safetensors")}
    assert sorted(kept) == [f"train-{i:05d}.safetensors" for i in range(KILL_AFTER)], kept
    (half,) = cache.glob(".*.tmp")  # the chunk in flight, owned by the dead process
    assert not (cache / "complete.json").exists()

    rerun = _cli_process(tmp, home, -1, "-v", *_extract())
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = f"resuming, {KILL_AFTER} of {TOTAL_CHUNKS} chunks already on disk"
    assert resumed in rerun.stderr, rerun.stderr[-2000:]
    assert not half.exists() and not list(cache.glob(".*")), "the dead run's temp file is still there"
    assert {n: (cache / n).stat().st_ino for n in kept} == kept, "finished chunks were rewritten"
    computed = sorted(set(p.name for p in cache.glob("*.safetensors")) - set(kept))
    assert len(computed) == TOTAL_CHUNKS - KILL_AFTER, computed

    clean_home = tmp.parent / "clean-home"
    clean = _cli_process(tmp, clean_home, -1, *_extract())
    assert clean.returncode == 0, clean.stderr[-2000:]
    (clean_cache,) = (clean_home / "cache" / "features").iterdir()
    assert _files(cache) == _files(clean_cache), "the resumed cache differs from an uninterrupted one"
    (line,) = [ln for ln in rerun.stdout.splitlines() if ln.startswith("model @ 32 tokens")]
    shown = line.split(", /")[0]  # the cache folder is a hash: left out of the table
    return Outcome(f"(first run killed by SIGKILL mid-chunk) rerun prints: {shown} ({resumed})",
                   f"{KILL_AFTER} finished chunks reused as they were, the dead run's half-written "
                   f"temp file removed, {TOTAL_CHUNKS - KILL_AFTER} chunks computed once; the cache "
                   "equals an uninterrupted run's byte for byte")


CASES = [
    Case("model folder", "config.json is not JSON", f"{CMD} 32",
         _refused(lambda m: (m / "config.json").write_text("{not json"), "not valid JSON",
                  "config.json", "pass another --model")),
    Case("model folder", "config.json without a model_type", f"{CMD} 32",
         _refused(lambda m: (m / "config.json").write_text('{"hidden_size": 32}'), 'no "model_type"',
                  "pass another --model")),
    Case("model folder", "config.json with num_hidden_layers = \"two\"", f"{CMD} 32",
         _refused(lambda m: _json_edit(m / "config.json", num_hidden_layers="two"),
                  "not a usable model config", "num_hidden_layers")),
    Case("model folder", "config.json says 4 layers over 2 layers' weights (were random layers)",
         f"{CMD} 32", _refused(lambda m: _json_edit(m / "config.json", num_hidden_layers=4),
                               "weights lack", "num_hidden_layers")),
    Case("model folder", "a folder without weights", f"{CMD} 32",
         _refused(_no_weights, "no model weights", "--model")),
    Case("model folder", "a folder without a tokenizer (was an all-[UNK] tokenizer)", f"{CMD} 32",
         _refused(_no_tokenizer, "has no tokenizer", "tokenizer.json")),
    Case("model folder", "a truncated model.safetensors", f"{CMD} 32",
         _refused(_truncated_weights, "could not be loaded", "belong together")),
    Case("CLI option", "--max-length beyond the model's 512 position embeddings", f"{CMD} 100000",
         _refused(_unchanged, "512 position embeddings", "--max-length 512 or less", max_length=100000)),
    Case("CLI option", "--max-length 2: room for [CLS] and [SEP] only", f"{CMD} 2",
         _refused(_unchanged, "no room for text", "--max-length 3 or more", max_length=2)),
    Case("CLI option", "CODESIGN_CHUNK_SIZE=0 (was a division by zero)", f"CODESIGN_CHUNK_SIZE=0 {CMD} 32",
         _refused(_unchanged, "CODESIGN_CHUNK_SIZE='0'", "positive integer", env={"CODESIGN_CHUNK_SIZE": "0"})),
    Case("interrupted work", "codesign extract killed by SIGKILL while writing a chunk, then rerun",
         f"CODESIGN_CHUNK_SIZE=8 {CMD} 32  (killed, then run again)", _killed_then_rerun),
]
