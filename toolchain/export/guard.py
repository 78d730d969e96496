"""The int8 accuracy guard: what an int8 variant's measured accuracy means for its use.

An int8 artefact is judged on the accuracy measured from the artefact itself (ONNX Runtime on
the validation split) against its fp32 twin's, and on the validation against PyTorch at the
precision's tolerance. After every recipe (and the quantization-aware head refit) one of:

* ``ok``: the first recipe held (within ``max_accuracy_drop`` and the tolerance);
* ``fell back``: a later recipe or the refit held;
* ``infeasible``: none held. The artefact folder is still written, so that the verdict is
  recorded and not recomputed, but the loop never selects the variant, the profiler never
  measures it and the bundle builder refuses it (``QuantizationError``).

Artefacts written by codesign before the guard meant this said ``failed`` and were used anyway;
they are read as infeasible.
"""

from __future__ import annotations

from ..errors import QuantizationError

OK, FELL_BACK, INFEASIBLE = "ok", "fell back", "infeasible"
_INFEASIBLE = (INFEASIBLE, "failed")


def holds(fp32_acc: float, acc: float, check_passed: bool, max_drop: float) -> bool:
    """Whether one try keeps accuracy: within ``max_drop`` of fp32 and within tolerance of PyTorch."""
    return bool(check_passed) and fp32_acc - acc <= max_drop


def verdict(fp32_acc: float, acc: float, check_passed: bool, max_drop: float, first_try: bool) -> tuple[str, str]:
    """(guard, reason) for the try that was kept; reason is "" unless infeasible."""
    if holds(fp32_acc, acc, check_passed, max_drop):
        return (OK if first_try else FELL_BACK), ""
    why = []
    if fp32_acc - acc > max_drop:
        why.append(f"validation accuracy {100 * acc:.1f} % is {100 * (fp32_acc - acc):.1f} points below fp32's "
                   f"{100 * fp32_acc:.1f} % (allowed {100 * max_drop:.1f})")
    if not check_passed:
        why.append("its outputs are outside the precision's tolerance of PyTorch")
    return INFEASIBLE, "; ".join(why) + " after every recipe and the head refit"


def is_infeasible(meta: dict | None) -> bool:
    return bool(meta) and meta.get("precision", "fp32") != "fp32" and meta.get("accuracy_guard") in _INFEASIBLE


def reason(meta: dict) -> str:
    """One line: which int8 variant is infeasible and why."""
    why = meta.get("guard_reason") or (f"accuracy drop {100 * meta.get('accuracy_drop', 0):.1f} points "
                                       f"(allowed {100 * meta.get('max_accuracy_drop', 0):.1f})")
    return f"{meta.get('precision')} infeasible: {why}"


def refuse_infeasible(meta: dict, what: str) -> None:
    """Raise QuantizationError when ``meta`` is an infeasible int8 artefact."""
    if is_infeasible(meta):
        raise QuantizationError(
            f"candidate {meta.get('candidate_id')}: {reason(meta)}; {what} — use its fp32 variant "
            f"(candidate {meta.get('base_candidate_id')}) or another candidate")
