"""Does a quantized head fit a microcontroller? Flash holds the firmware and the model blob;
RAM holds the firmware's own state plus the head's activations and scratch.

The limit on each is the smaller of the chip (``[mcu]``) and the budget (``[budgets]``); a zero
means "not stated". An infeasible report says which limit is exceeded and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.target_spec import TargetSpec
from .blob import blob_size
from .quantize import QuantizedHead

# Measured with arm-none-eabi-size on the mps2/stm32f4 builds (about 7.5 KiB of text), rounded
# up for vendor start-up code and a flash-programming driver a production port would add.
FIRMWARE_FLASH_BYTES = 16 * 1024
# The whole-model image (mps2-whole: tokenizer with its Unicode tables, depth-0 code and the
# tload/tdata/tinfer commands): 23,936 B of text measured on mps2, rounded up the same way.
WHOLE_FIRMWARE_FLASH_BYTES = 32 * 1024
# Line buffer, reply state, CRC table, the self-check output buffer and the stack.
FIRMWARE_RAM_BYTES = 12 * 1024
# Whole-model image on top: the text buffer (CS_TEXT_MAX) and the tinfer buffers sized by
# CS_MAX_DIM (ids u16, scratch 2 x i32, features i8) and two cs_whole_t: 47,848 B more bss than
# the head-only mps2 image (arm-none-eabi-size), rounded up.
WHOLE_FIRMWARE_RAM_EXTRA_BYTES = 48 * 1024


@dataclass(frozen=True)
class BudgetReport:
    feasible: bool
    flash_needed_bytes: int
    flash_limit_bytes: int  # 0: no limit stated
    ram_needed_bytes: int
    ram_limit_bytes: int  # 0: no limit stated
    reason: str = ""  # empty when feasible


def _limit(*values_bytes: float) -> int:
    stated = [int(v) for v in values_bytes if v > 0]
    return min(stated) if stated else 0


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def check_budget(head: QuantizedHead, spec: TargetSpec) -> BudgetReport:
    flash_needed = FIRMWARE_FLASH_BYTES + blob_size(head)
    ram_needed = FIRMWARE_RAM_BYTES + head.activation_bytes + head.scratch_bytes
    flash_limit = _limit(spec.mcu.flash_kb * 1024, spec.budgets.flash_kb * 1024)
    ram_limit = _limit(spec.mcu.ram_kb * 1024, spec.budgets.ram_mb * 1024 * 1024)
    reasons = []
    if flash_limit and flash_needed > flash_limit:
        reasons.append(
            f"flash: model blob {_kib(blob_size(head))} + firmware {_kib(FIRMWARE_FLASH_BYTES)} "
            f"= {_kib(flash_needed)} exceeds {_kib(flash_limit)} on target '{spec.name}' "
            f"by {_kib(flash_needed - flash_limit)}; choose fewer features or a smaller hidden layer"
        )
    if ram_limit and ram_needed > ram_limit:
        reasons.append(
            f"RAM: activations {_kib(head.activation_bytes)} + firmware {_kib(FIRMWARE_RAM_BYTES)} "
            f"= {_kib(ram_needed)} exceeds {_kib(ram_limit)} on target '{spec.name}'; "
            "narrow the widest layer"
        )
    return BudgetReport(
        feasible=not reasons,
        flash_needed_bytes=flash_needed,
        flash_limit_bytes=flash_limit,
        ram_needed_bytes=ram_needed,
        ram_limit_bytes=ram_limit,
        reason="; ".join(reasons),
    )
