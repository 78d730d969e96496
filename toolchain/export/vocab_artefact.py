"""The pruned-vocabulary ONNX artefact, validated against its unpruned twin.

A pruned artefact is exported like any fp32 one (the embedding table sliced in the torch module,
the remapped ``tokenizer.json`` beside it, checked against PyTorch at the fp32 tolerance), and
then compared with the unpruned artefact of the same candidate on the validation split:

* the pruned tokenizer must give, for every text, exactly the unpruned ids remapped (dropped
  pieces → their substitutes): same lengths, same splitting;
* on every validation text none of whose tokens is dropped the two artefacts must agree at the
  fp32 tolerance (``toolchain/export/tolerances.py``): pruning changes nothing there;
* over all texts the argmax agreement, the share of tokens that become [UNK] (validation and
  test) and the accuracy of both are recorded in artefact.json (``vocab``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ValidationMismatchError
from .text_inputs import batched_probs, encode, load_tokenizer
from .tolerances import TOLERANCES
from .validate import ort_session
from .vocab import VocabPruning, special_token_ids, token_shares


def compare_with_full(full_dir: Path, pruned_dir: Path, pruning: VocabPruning, dataset, max_length: int) -> dict:
    """The ``vocab`` block of a pruned artefact's artefact.json; raises ValidationMismatchError
    when the tokenizers disagree or an untouched text's outputs differ beyond fp32 tolerance."""
    specials = special_token_ids(json.loads((Path(full_dir) / "tokenizer.json").read_text(encoding="utf-8")))
    full_tok, pruned_tok = load_tokenizer(full_dir, max_length), load_tokenizer(pruned_dir, max_length)
    full_s, pruned_s = ort_session(Path(full_dir) / "model.onnx", 2), ort_session(Path(pruned_dir) / "model.onnx", 2)
    tol = TOLERANCES["fp32"]
    out = {"pruning": pruning.to_dict(), "tolerance_max_abs_prob": tol.max_abs_prob}
    splits = [("validation", dataset.validation)] + ([("test", dataset.test)] if dataset.test is not None else [])
    for name, split in splits:
        ids_full, ids_pruned = encode(full_tok, split.texts), encode(pruned_tok, split.texts)
        bad = [i for i, (a, b) in enumerate(zip(ids_full, ids_pruned, strict=True))
               if len(a) != len(b) or not np.array_equal(pruning.remap(a), b)]
        if bad:
            raise ValidationMismatchError(
                f"{pruned_dir}: the pruned tokenizer's ids are not the unpruned ids remapped on {len(bad)} "
                f"{name} texts (first: {split.texts[bad[0]]!r}); re-export the artefact"
            )
        p_full, p_pruned = batched_probs(full_s, ids_full), batched_probs(pruned_s, ids_pruned)
        untouched = np.array([not pruning.dropped_mask(x).any() for x in ids_full])
        diff = np.abs(p_full - p_pruned).max(axis=1)
        max_untouched = float(diff[untouched].max()) if untouched.any() else 0.0
        labels = np.asarray(split.labels)
        out[name] = {
            **token_shares(ids_full, pruning, specials),
            "texts": len(ids_full),
            "untouched_texts": int(untouched.sum()),
            "max_abs_prob_untouched": max_untouched,
            "max_abs_prob_all": float(diff.max()),
            "argmax_agreement": float((p_full.argmax(1) == p_pruned.argmax(1)).mean()),
            "acc_full": float((p_full.argmax(1) == labels).mean()),
            "acc_pruned": float((p_pruned.argmax(1) == labels).mean()),
        }
        if max_untouched > tol.max_abs_prob:
            raise ValidationMismatchError(
                f"{pruned_dir}: on {name} texts with no dropped token the pruned artefact differs from the "
                f"unpruned one by {max_untouched:.3g} in probability (fp32 tolerance {tol.max_abs_prob:g}); "
                "the embedding rows do not match the remapped tokenizer; re-export"
            )
    out["passed"] = True
    return out
