"""Run an ONNX artefact with ONNX Runtime and compare it with PyTorch at the stated tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ValidationMismatchError
from .tolerances import TOLERANCES, Tolerance


@dataclass(frozen=True)
class ReferenceSet:
    """Inputs at batch 1 with their real lengths, and what PyTorch says for each."""

    input_ids: np.ndarray  # [N, T] int64, right-padded
    attention_mask: np.ndarray
    lengths: np.ndarray  # [N]
    expected: np.ndarray  # [N, C] probabilities from PyTorch

    def save(self, path: Path) -> None:
        np.savez(path, input_ids=self.input_ids, attention_mask=self.attention_mask,
                 lengths=self.lengths, expected=self.expected)

    @classmethod
    def load(cls, path: Path) -> ReferenceSet:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["input_ids"], z["attention_mask"], z["lengths"], z["expected"])


@dataclass(frozen=True)
class ValidationResult:
    precision: str
    max_abs_prob: float
    argmax_agreement: float
    tolerance: dict
    n: int
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_reference(session, ref: ReferenceSet) -> np.ndarray:
    outs = []
    for i, n in enumerate(ref.lengths):
        feed = {"input_ids": ref.input_ids[i : i + 1, :n], "attention_mask": ref.attention_mask[i : i + 1, :n]}
        outs.append(session.run(["probs"], feed)[0][0])
    return np.stack(outs)


def compare(got: np.ndarray, ref: ReferenceSet, precision: str, tol: Tolerance | None = None) -> ValidationResult:
    tol = tol or TOLERANCES[precision]
    if got.shape != ref.expected.shape:
        raise ValidationMismatchError(
            f"artefact output shape {got.shape} differs from PyTorch's {ref.expected.shape}; re-export"
        )
    max_abs = float(np.abs(got - ref.expected).max())
    agree = float((got.argmax(1) == ref.expected.argmax(1)).mean())
    passed = max_abs <= tol.max_abs_prob and agree >= tol.min_argmax_agreement
    return ValidationResult(precision, max_abs, agree, asdict(tol), len(got), passed)


def validate_artefact(path: Path, ref: ReferenceSet, precision: str, tol: Tolerance | None = None) -> ValidationResult:
    """Raise ValidationMismatchError, saying what differed by how much, when out of tolerance."""
    result = compare(run_reference(ort_session(path), ref), ref, precision, tol)
    if not result.passed:
        raise ValidationMismatchError(
            f"{path}: {precision} artefact differs from PyTorch: max |Δprob| {result.max_abs_prob:.3g} "
            f"(tolerance {result.tolerance['max_abs_prob']:g}), argmax agreement "
            f"{result.argmax_agreement:.0%} (needs {result.tolerance['min_argmax_agreement']:.0%}) "
            f"on {result.n} reference inputs; re-export, or use another quantization recipe"
        )
    return result
