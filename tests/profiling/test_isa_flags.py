"""Codesign issue 13, item 7: every record names the ISA flags of the CPU that measured it, so an
int8/fp32 ratio is tied to the instructions (VNNI, SDOT, SMMLA) its kernels could use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toolchain.boards.emulation.aarch64 import _CPUS, DEFAULT_ROOTFS, cpuinfo_text
from toolchain.bundle import agent
from toolchain.profiling import isa
from toolchain.profiling.records import CostRecord, host_info
from toolchain.search.candidate import Candidate

# A Sapphire Rapids guest, two cores. The "vmx flags" line lists names that are no instructions
# (a bogus i8mm is planted there): only the exact "flags" key counts.
X86_CPUINFO = "".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw "
    "avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    "vmx flags\t: vnmi preemption_timer i8mm\nbugs\t\t: spectre_v1\n\n"
    for i in range(2)
)
# A Neoverse-V1-like arm64 part: SVE i8mm is "svei8mm", which must not read as "i8mm".
ARM_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                "lrcpc dcpop sha3 asimddp sha512 sve asimdfhm svei8mm svebf16 i8mm bf16")
ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 243.75\nFeatures\t: {ARM_FEATURES}\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd40\n\n"
    for i in range(4)
)
PARSERS = [pytest.param(isa.parse_cpu_flags, id="toolchain"), pytest.param(agent.parse_cpu_flags, id="agent")]


@pytest.mark.parametrize("parse", PARSERS)
def test_x86_flags_in_fixed_order(parse):
    assert parse(X86_CPUINFO) == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]


@pytest.mark.parametrize("parse", PARSERS)
def test_arm_features_with_dot_product_and_i8mm(parse):
    assert parse(ARM_CPUINFO) == ["asimd", "asimddp", "i8mm", "sve"]
    # Without i8mm, the SVE variant alone does not make it appear.
    assert "i8mm" not in parse(ARM_CPUINFO.replace(" i8mm ", " "))


@pytest.mark.parametrize("parse", PARSERS)
def test_only_flags_every_core_has_and_none_without_cpuinfo(parse):
    mixed = ARM_CPUINFO.replace(f"Features\t: {ARM_FEATURES}", "Features\t: fp asimd", 1)
    assert parse(mixed) == ["asimd"]  # one core without asimddp: no kernel can count on it
    assert parse("") == [] and parse("processor\t: 0\n") == []


def test_agent_copy_matches_toolchain():
    """The agent ships alone and may not import codesign: its copy must not drift."""
    assert agent.ISA_FLAGS == isa.ISA_FLAGS
    assert agent.cpu_flags() == isa.cpu_flags()


@pytest.mark.parametrize("cpu", sorted(_CPUS))
def test_emulated_board_cpuinfo_reads_as_arm(cpu):
    """What the stand-in aarch64 board bind-mounts over /proc/cpuinfo (and qemu emulates)."""
    flags = agent.parse_cpu_flags(cpuinfo_text(cpu))
    assert "asimd" in flags and not {"avx2", "fma", "avx512_vnni"} & set(flags)
    assert ("asimddp" in flags) == (cpu == "cortex-a76")  # the only ARMv8.2 template


def _prebuilt_rootfs() -> Path:
    cache = os.environ.get("CODESIGN_ROOTFS_CACHE")
    if not cache or not (Path(cache) / DEFAULT_ROOTFS / ".codesign-rootfs.json").is_file():
        pytest.skip("no prebuilt arm64 rootfs; set CODESIGN_ROOTFS_CACHE (see tests/ssh/conftest.py)")
    return Path(cache) / DEFAULT_ROOTFS


@pytest.mark.slow
@pytest.mark.emulator
def test_agent_under_qemu_reports_the_emulated_cpus_flags():
    from toolchain.boards.emulation import run_in_rootfs

    code = (f"import json, sys; sys.path.insert(0, {str(Path(agent.__file__).parent)!r}); "
            "import agent; print(json.dumps(agent.cpu_flags()))")
    proc = run_in_rootfs(_prebuilt_rootfs(), ["/usr/bin/python3", "-c", code],
                         cpu="cortex-a76", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["asimd", "asimddp"]


def _record(host: dict) -> CostRecord:
    cand = Candidate(backbone="tiny", layers=(2,), combine="single", pooling="mean", head="softmax",
                     head_size=0, precision="int8-dynamic", max_length=32)
    return CostRecord(target="host", target_hash="t" * 16, candidate_id=cand.id, candidate=cand.to_dict(),
                      precision=cand.precision, runtime="onnxruntime", latency_ms_samples=(1.0, 2.0), host=host)


def test_host_info_record_carries_this_hosts_isa_and_old_records_still_load():
    rec = CostRecord.from_dict(json.loads(json.dumps(_record(host_info()).to_dict())))
    assert rec.isa == tuple(isa.cpu_flags())
    assert rec.host["isa"] == " ".join(isa.cpu_flags())
    old = _record({"cpu_model": "x"}).to_dict()  # written before ISA flags were kept
    assert CostRecord.from_dict(old).isa is None
    assert _record({"isa": ""}).isa == ()  # known: a CPU with none of them


def test_host_profile_record_and_results_table_carry_the_isa(single_combination_run):
    from toolchain.boards.registry import open_target
    from toolchain.cli_results import render_table
    from toolchain.profiling.runner import profile_candidates
    from toolchain.store.db import RecordStore

    base = sorted(p.stem for p in (single_combination_run / "heads").glob("*.safetensors"))[0]
    with RecordStore() as store:
        profile_candidates(single_combination_run, open_target("host"), store, [base], ("fp32",), warmup=0, iterations=2)
        (rec,) = store.records(target="host")  # read back from the store, not the object made
    assert rec.isa == tuple(isa.cpu_flags())
    header, _, row = render_table([rec]).splitlines()
    assert header.split()[-1] == "ISA"
    assert row.endswith(" ".join(isa.cpu_flags()) or "-")


@pytest.mark.slow
@pytest.mark.emulator
def test_emulated_rpi4_record_carries_arm_flags_not_the_hosts(single_combination_run):
    from toolchain.boards.registry import open_target
    from toolchain.profiling.runner import profile_candidates
    from toolchain.store.db import RecordStore

    _prebuilt_rootfs()
    base = sorted(p.stem for p in (single_combination_run / "heads").glob("*.safetensors"))[0]
    with RecordStore() as store:
        (rec,) = profile_candidates(single_combination_run, open_target("rpi4", emulate=True), store, [base], ("fp32",),
                                    warmup=0, iterations=1)
    assert rec.emulated and rec.host["machine"] == "aarch64"
    assert rec.isa == ("asimd",)  # the Cortex-A72 of targets/rpi4.toml: no dot product, no avx2
