"""Instructions per multiply-accumulate of the firmware's int8 dense kernels on QEMU mps2-an386
(Cortex-M4), portable C kernels vs the DSP (SMLAD/SXTB16) kernels, in one process.

    python benchmarks/mcu_kernels_bench.py [--json OUT]

Both images are built from this checkout with the same compiler and flags; the baseline adds
-DCS_KERNELS_PORTABLE, which compiles the portable kernels (kernels.c, the code the firmware
had before the DSP kernels) on the same core. Each head is baked into the image (QEMU's UART
is slow), self-checked, and run on a few inputs with ``infer 20 1``; every output must equal the
Python integer reference bit for bit. QEMU -icount shift=0 makes the SysTick count guest
instructions (40 per tick), so the figures are deterministic counts, not timings: the same
image and inputs give the same count on any host. Heads: a 384 x 6 softmax regression (the
MiniLM hidden size, 6 TREC classes) and an ELM-1024 (384 -> 1024 ReLU -> 6).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

REPEAT = 20  # runs per 'infer': the 40-instruction tick resolution becomes 2 per inference


def heads(seed: int = 0) -> dict:
    """Quantized heads with Gaussian weights, calibrated on Gaussian (standardised) features."""
    from toolchain.heads.dense import DenseLayer
    from toolchain.mcu import quantize_head

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 384)).astype(np.float32)

    def layer(n_out, n_in, act="none"):
        w = (rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        return DenseLayer(w, (0.1 * rng.normal(size=n_out)).astype(np.float32), act)

    return {
        "softmax-384x6": (quantize_head([layer(6, 384)], x), x),
        "elm-1024": (quantize_head([layer(1024, 384, "relu"), layer(6, 1024)], x), x),
    }


def macs(head) -> int:
    return sum(layer.in_features * layer.out_features for layer in head.layers)


def build(out: Path, header: Path, extra_cflags: str = "") -> Path:
    cmd = ["make", "-C", str(HERE.parent / "firmware_stubs"), f"OUT={out}", "mps2",
           f"BAKED={header}"]
    if extra_cflags:
        cmd.append(f"EXTRA_CFLAGS={extra_cflags}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"firmware build failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return out / "mps2" / "codesign-fw.elf"


def measure(image: Path, head, x: np.ndarray, n_inputs: int = 3) -> dict:
    """Instructions per inference on ``n_inputs`` inputs, outputs checked bit-exact."""
    from toolchain.boards.mcu_emulation import qemu_mps2
    from toolchain.boards.serial_link import SerialLink
    from toolchain.mcu import run_int8, selfcheck_crc
    from toolchain.mcu.blob import model_id, to_blob

    x_q = head.quantize_input(x[:n_inputs])
    with qemu_mps2(image) as url, SerialLink(url, timeout_s=30.0) as link:
        link.handshake()
        if link.active_model_id() != model_id(to_blob(head)):
            raise SystemExit("the baked model is not the active one")
        check = link.self_check(timeout_s=60.0)
        results = [link.infer(row, repeat=REPEAT, warmup=1, timeout_s=120.0) for row in x_q]
    outputs = np.stack([r.output for r in results])
    bit_exact = bool(np.array_equal(outputs, run_int8(head, x_q))
                     and check.crc == selfcheck_crc(head))
    if not bit_exact:
        raise SystemExit(f"{image}: outputs differ from the Python integer reference")
    per_inference = [r.icount / REPEAT for r in results]
    return {"instructions_per_inference": per_inference, "bit_exact": bit_exact,
            "instructions_per_mac": float(np.median(per_inference)) / macs(head)}


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(tool: str) -> str:
        if shutil.which(tool) is None:
            return ""
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0] if out.stdout else ""

    return {"hostname": socket.gethostname(), "cpu": cpu, "python": platform.python_version(),
            "arm_gcc": version("arm-none-eabi-gcc"), "qemu": version("qemu-system-arm"),
            "emulated_core": "Cortex-M4 (QEMU mps2-an386, -icount shift=0,align=off,sleep=off)",
            "note": "instruction counts are deterministic; host speed does not enter them"}


def main(argv: list[str] | None = None) -> int:
    from toolchain.mcu.blob import to_c_header

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="where to write the result JSON")
    ap.add_argument("--dsp-only", action="store_true", help="skip the portable baseline")
    args = ap.parse_args(argv)
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "make"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install gcc-arm-none-eabi qemu-system-arm)")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mcu-kernels-") as tmp:
        for name, (head, x) in heads().items():
            header = Path(tmp) / f"{name}.h"
            header.write_text(to_c_header(head))
            row = {"macs": macs(head), "layers": [[lay.in_features, lay.out_features]
                                                  for lay in head.layers]}
            variants = (("portable", "-DCS_KERNELS_PORTABLE"), ("dsp", ""))
            for variant, flags in variants[1:] if args.dsp_only else variants:
                image = build(Path(tmp) / f"{variant}-{name}", header, flags)
                row[variant] = measure(image, head, x)
                print(f"{name:14s} {variant:8s} {row[variant]['instructions_per_mac']:.3f} "
                      "instructions/MAC", flush=True)
            if "portable" in row:
                row["dsp_vs_portable"] = (row["dsp"]["instructions_per_mac"]
                                          / row["portable"]["instructions_per_mac"])
            rows[name] = row
    result = {"benchmark": "mcu_kernels_bench", "date": datetime.now(timezone.utc).isoformat(),
              "machine": machine(), "repeat_per_infer": REPEAT, "heads": rows}
    out = args.json or HERE / "results" / (
        f"{datetime.now().strftime('%Y-%m-%d')}-{socket.gethostname()}-mcu-kernels.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
