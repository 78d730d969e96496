"""Microcontroller deployment: int8 quantization of dense heads, the bit-exact integer
reference, the weights blob, flash/RAM budgets, and the firmware protocol constants.

Heavy or optional imports (pyserial) stay inside the modules that need them.
"""

from __future__ import annotations

from .budget import BudgetReport, check_budget
from .quantize import QuantizedHead, QuantizedLayer, quantize_head
from .reference import run_int8, selfcheck_crc

__all__ = [
    "BudgetReport",
    "QuantizedHead",
    "QuantizedLayer",
    "check_budget",
    "quantize_head",
    "run_int8",
    "selfcheck_crc",
]
