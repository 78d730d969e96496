"""On-board personalisation: refit a bundle's head on the user's own labelled examples.

Shipped in every Linux bundle next to ``runner.py`` (``python3 runner.py --learn FILE``), so,
like the runner, it needs only numpy and never imports codesign; the host-side gateway of a
microcontroller imports the same fitting code from ``toolchain.bundle``. Python 3.8 syntax.

What a learn does
-----------------
1. Reads ``text``/``label`` rows from a JSONL or CSV file (``read_examples``): a bad file is a
   ``LearnError`` before anything is computed or written.
2. The bundle's own truncated model gives each text's ``features`` output: the standardised,
   combined vector the head takes (the shipped standardiser stays as it is).
3. A stratified part of the examples is held out; the rest, the examples of earlier accepted
   learns, and the fit half of the bundle's *anchor set* (a stratified float16 sample of the
   original training features) train the new head.
4. The head's hidden layers (ELM / MLP) stay fixed; its output layer is refitted as a softmax
   regression warm-started from the active head's and pulled towards it by an L2 term
   (``fit_output_layer``): convex, deterministic, full-batch Nesterov steps. A label the head
   has never seen becomes a new output row, imprinted (``imprint_row``: shrunk-LDA direction
   of its examples, scale and bias fitted) and pulled towards that start.
5. The new head switches in only if its accuracy on the check half of the anchor set is at most
   ``max_anchor_drop`` below the *shipped* head's (so repeated learns cannot drift away step by
   step); otherwise nothing changes and the report says why.

State (``HeadState``)
---------------------
``<state>/heads/<id>/`` holds a head (``head.npz`` weights, ``head.json`` labels, activations
and metrics, ``examples.npz`` the user features it was fitted on: no pickle, no texts), and
``<state>/active.json`` names the active and the previous head ("shipped" is the bundle's own).
A new head is written in ``<id>.partial`` and renamed, and only then does ``active.json`` change,
by one ``os.replace``: a learn killed at any point leaves the old head active, and the next learn
removes the leftovers. Where ``<state>`` is: see ``default_state_dir``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time

STATE_SCHEMA = 1
SHIPPED = "shipped"
DEFAULT_MAX_ANCHOR_DROP = 0.02
DEFAULT_HOLDOUT = 0.2
L2_TO_INIT = 1e-2  # pull of the refitted output layer's known classes towards the active head
L2_NEW = 1.0  # a new class's row: towards its imprinted start (imprint_row), not towards zero
IMPRINT_SHRINK = 0.5  # shrinkage of the within-class covariance towards a scaled identity
FIT_ITERATIONS = 400
KEEP_HEADS = 3
MAX_EXAMPLES = 100000
MAX_LABEL_CHARS = 200
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class LearnError(Exception):
    """A learn that cannot go on; nothing was switched. ``kind`` names it for the JSON report."""

    def __init__(self, kind: str, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


# ---- the user's examples ---------------------------------------------------------------------------
def read_examples(path: str, text_field: str = "text", label_field: str = "label"):
    """(texts, labels as strings) from a JSONL or CSV file with a ``text`` and ``label`` column."""
    ext = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise LearnError("bad_examples", "{}: unknown format {!r}; give a .jsonl file (one JSON object "
                         "per line) or a .csv file with a header row".format(path, ext or "(no extension)"))
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise LearnError("bad_examples", f"{path}: cannot read it: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LearnError("bad_examples", f"{path}: not UTF-8 ({exc}); save it as UTF-8") from exc
    if not text.strip():
        raise LearnError("bad_examples", f"{path}: the file is empty; give at least two labelled examples")
    rows = _jsonl_rows(path, text) if fmt == "jsonl" else _csv_rows(path, text)
    texts, labels = [], []
    for line, row in rows:
        for field in (text_field, label_field):
            if field not in row:
                raise LearnError("bad_examples", "{}:{}: no {!r} field (found: {}); every row needs {!r} and {!r}".format(
                    path, line, field, ", ".join(sorted(map(str, row))) or "none", text_field, label_field))
        value, label = row[text_field], row[label_field]
        if not isinstance(value, str) or not value.strip():
            raise LearnError("bad_examples", f"{path}:{line}: {text_field!r} must be a non-empty string")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
            raise LearnError("bad_examples", f"{path}:{line}: {label_field!r} must be a non-empty string or integer")
        label = str(label).strip()
        if len(label) > MAX_LABEL_CHARS:
            raise LearnError("bad_examples", f"{path}:{line}: a label of {len(label)} characters; keep labels under {MAX_LABEL_CHARS}")
        texts.append(value)
        labels.append(label)
        if len(texts) > MAX_EXAMPLES:
            raise LearnError("bad_examples", f"{path}: more than {MAX_EXAMPLES} examples; split the file")
    if len(texts) < 2:
        raise LearnError("bad_examples", f"{path}: {len(texts)} example; a learn needs at least two (and two labels)")
    if len(set(labels)) < 2:
        raise LearnError("bad_examples", f"{path}: all {len(labels)} examples have the label {labels[0]!r}; give examples of at least "
                         "two labels, so that the held-out check can tell them apart")
    return texts, labels


def _jsonl_rows(path, text):
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise LearnError("bad_examples", f"{path}:{n}: not JSON ({exc}); one object per line") from exc
        if not isinstance(row, dict):
            raise LearnError("bad_examples", f"{path}:{n}: a JSON {type(row).__name__}, not an object")
        rows.append((n, row))
    return rows


def _csv_rows(path, text):
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader)
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise LearnError("bad_examples", f"{path}:{reader.line_num}: {len(row)} cells under a header of {len(header)}; quote cells that hold "
                                 "commas")
            rows.append((reader.line_num, dict(zip(header, row))))  # noqa: B905 - Python 3.8 boards: no strict=
    except csv.Error as exc:
        raise LearnError("bad_examples", f"{path}: not CSV: {exc}") from exc
    if not rows:
        missing = [f for f in ("text", "label") if f not in header]
        raise LearnError("bad_examples", "{}: a header ({}) and no example rows{}".format(
            path, ",".join(header), f"; it has no {missing[0]!r} column" if missing else ""))
    return rows


# ---- heads ----------------------------------------------------------------------------------------
class Head:
    """Dense layers y = act(x @ w.T + b), w [out, in]; ``labels`` name the outputs."""

    def __init__(self, weights, biases, activations, labels) -> None:
        self.weights = list(weights)
        self.biases = list(biases)
        self.activations = list(activations)
        self.labels = list(labels)

    def hidden(self, x):
        import numpy as np

        for w, b, act in zip(self.weights[:-1], self.biases[:-1], self.activations[:-1]):  # noqa: B905 - Python 3.8 boards: no strict=
            x = x @ w.T + b
            if act == "relu":
                x = np.maximum(x, 0.0)
        return x

    def logits(self, x):
        return self.hidden(x) @ self.weights[-1].T + self.biases[-1]

    def probs(self, x):
        import numpy as np

        z = self.logits(np.asarray(x, dtype=np.float32))
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def predict(self, x):
        return self.logits(x).argmax(axis=-1)

    def save(self, folder: str) -> None:
        import numpy as np

        arrays = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):  # noqa: B905 - Python 3.8 boards: no strict=
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez(os.path.join(folder, "head.npz"), **arrays)

    @classmethod
    def load(cls, npz_path: str, activations, labels) -> Head:
        import numpy as np

        with np.load(npz_path, allow_pickle=False) as z:
            n = len([k for k in z.files if k.startswith("w")])
            ws = [np.asarray(z[f"w{i}"], dtype=np.float32) for i in range(n)]
            bs = [np.asarray(z[f"b{i}"], dtype=np.float32) for i in range(n)]
        if len(activations) != n or ws[-1].shape[0] != len(labels):
            raise LearnError("bad_state", f"{npz_path}: {n} layers / {ws[-1].shape[0]} outputs, but {len(activations)} activations / {len(labels)} labels")
        return cls(ws, bs, activations, labels)


def fit_output_layer(h, y, w_init, b_init, sample_weight, l2=L2_TO_INIT, iterations=FIT_ITERATIONS,
                     n_new=0, freeze_old=False):
    """Output weights [C, k] and bias [C] minimising sum_i s_i CE(softmax(W h_i + b), y_i) +
    l2/2 ||W_old - w_init||² + L2_NEW/2 ||W_new - w_init_new||², from (w_init, b_init); the last
    ``n_new`` rows are new classes, pulled towards their imprinted start (``imprint_row``: a
    pull towards zero would leave a new class only its bias, and then it takes old examples);
    ``sample_weight`` sums to 1.

    Convex; Nesterov's accelerated gradient with the step 1/L of the loss's Lipschitz bound
    (the softmax Hessian is at most 1/2 per sample), so no line search and no randomness."""
    import numpy as np

    h = np.asarray(h, dtype=np.float64)
    s = np.asarray(sample_weight, dtype=np.float64)
    onehot = np.zeros((len(y), w_init.shape[0]))
    onehot[np.arange(len(y)), y] = 1.0
    h1 = np.hstack([h, np.ones((len(h), 1))])
    lipschitz = 0.5 * float(np.linalg.norm(h1 * np.sqrt(s)[:, None], 2)) ** 2 + max(l2, L2_NEW)
    step = 1.0 / lipschitz
    theta0 = np.hstack([w_init, b_init[:, None]]).astype(np.float64)  # [C, k+1]
    mask = np.full_like(theta0, l2)
    if n_new:
        mask[-n_new:] = L2_NEW
    mask[:, -1] = 0.0  # the bias is not pulled
    theta = theta0.copy()
    prev = theta.copy()
    for t in range(1, iterations + 1):
        look = theta + (t - 1.0) / (t + 2.0) * (theta - prev)
        z = h1 @ look.T
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        grad = ((p - onehot) * s[:, None]).T @ h1 + mask * (look - theta0)
        if freeze_old and n_new:
            grad[:-n_new] = 0.0  # old rows stay exactly as shipped: only new-class false positives move them
        prev, theta = theta, look - step * grad
        if float(np.abs(grad).max()) < 1e-7:
            break
    return theta[:, :-1].astype(np.float32), theta[:, -1].astype(np.float32)


def balanced_weights(y, n_classes):
    """Per-sample weights: every class present has the same total, summing to 1."""
    import numpy as np

    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = int((counts > 0).sum())
    return 1.0 / (present * counts[y])


def holdout_split(labels, fraction: float, seed: int = 0):
    """(train indices, held-out indices): per label, ``fraction`` of its examples (at least one,
    never all of them) held out; a label with one example is trained on only."""
    import numpy as np

    rng = np.random.RandomState(seed)
    train, held = [], []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        n_hold = 0 if len(idx) < 2 or fraction <= 0 else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        held += idx[:n_hold]
        train += idx[n_hold:]
    return sorted(train), sorted(held)


def accuracy(head: Head, x, labels):
    """{"accuracy", "per_class": {label: recall}, "n"} of ``head`` on features ``x`` whose true
    labels are names (a name the head lacks counts as wrong)."""
    if not len(labels):
        return None
    pred = [head.labels[k] for k in head.predict(x)]
    per = {}
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        per[label] = sum(pred[i] == label for i in idx) / len(idx)
    return {"accuracy": sum(p == t for p, t in zip(pred, labels)) / len(labels), "per_class": per,  # noqa: B905 - Python 3.8 boards: no strict=
            "n": len(labels)}


def refit(active: Head, user_x, user_labels, anchor_x, anchor_labels):
    """The refitted head on the user's features + the anchor's; its labels are the active
    head's plus every new user label (in order of first appearance)."""
    import numpy as np

    labels = list(active.labels) + [lab for lab in dict.fromkeys(user_labels) if lab not in active.labels]
    index = {lab: i for i, lab in enumerate(labels)}
    x = np.vstack([np.asarray(user_x, np.float32), np.asarray(anchor_x, np.float32)])
    y = np.asarray([index[lab] for lab in list(user_labels) + list(anchor_labels)], dtype=np.int64)
    extra = len(labels) - len(active.labels)
    base = _with_passthrough(active) if extra else active
    h = base.hidden(x)
    w_old = np.hstack([active.weights[-1], np.zeros((len(active.labels), h.shape[1] - active.weights[-1].shape[1]),
                                                     np.float32)])
    w0, b0 = w_old, active.biases[-1]
    sw = balanced_weights(y, len(labels))
    for c in range(len(active.labels), len(labels)):
        pt = h.shape[1] - 2 * x.shape[1] if base is not active else None
        w_c, b_c = imprint_row(h if pt is None else x, y, c, h @ w0.T + b0, sw, pt)
        w0, b0 = np.vstack([w0, w_c[None]]), np.concatenate([b0, [b_c]]).astype(np.float32)
    w, b = fit_output_layer(h, y, w0, b0, sw, n_new=extra, freeze_old=bool(extra))
    return Head(base.weights[:-1] + [w], base.biases[:-1] + [b], base.activations, labels)


def imprint_row(f, y, c, z_old, sample_weight, passthrough=None, iterations=200):
    """A new class c's starting row (and the centre of its L2 prior): the shrunk-LDA direction
    S^-1 (mean_c - mean of the rest) over the features ``f``, S the within-class covariance of
    the training rows shrunk halfway (IMPRINT_SHRINK) to a scaled identity, as a Gaussian with
    a covariance shared with the old classes (estimated on their many rows, not on the few of
    c) would give; then a scale and bias fitted, against the logits ``z_old`` of the rows
    already there, by the same weighted softmax loss (2 parameters: convex, Nesterov). With
    ``passthrough`` (the number of hidden units) f is the head's input and the row is
    [0 on those units, a w, -a w] (the pass-through units carry relu(x), relu(-x)).
    A zero row started far from any good one: few examples of c then left its row shrunk
    towards zero and most of c's unseen examples to the old classes."""
    import numpy as np

    n_hidden = passthrough or 0
    f = np.asarray(f, np.float64)
    is_c = y == c
    resid = np.vstack([f[y == k] - f[y == k].mean(axis=0) for k in np.unique(y)])
    cov = resid.T @ resid / len(resid)
    d = f.shape[1]
    cov = (1.0 - IMPRINT_SHRINK) * cov + IMPRINT_SHRINK * np.eye(d) * np.trace(cov) / d
    w = np.linalg.solve(cov, f[is_c].mean(axis=0) - f[~is_c].mean(axis=0))
    feats = np.stack([f @ w, np.ones(len(f))], axis=1)
    s = np.asarray(sample_weight, np.float64)
    step = 1.0 / (0.5 * float(np.linalg.norm(feats * np.sqrt(s)[:, None], 2)) ** 2)
    theta = np.array([1.0 / max(float(feats[:, 0].std()), 1e-12), 0.0])
    prev = theta.copy()
    for t in range(1, iterations + 1):
        look = theta + (t - 1.0) / (t + 2.0) * (theta - prev)
        z = np.hstack([z_old, (feats @ look)[:, None]])
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p_c = p[:, -1] / p.sum(axis=1)
        prev, theta = theta, look - step * (feats.T @ ((p_c - is_c) * s))
    a, b = float(theta[0]), float(theta[1])
    row = np.concatenate([np.zeros(n_hidden), a * w, -a * w]) if passthrough else a * w
    return row.astype(np.float32), b


def _with_passthrough(active: Head) -> Head:
    """The active head with 2*d extra ReLU units per hidden layer that carry the input x through
    exactly (relu(x) - relu(-x) = x): a new class's row then sees the features themselves, not
    only hidden units trained without it. The old rows get zero weight on them, so their logits
    are unchanged. Still plain dense layers (the runner and the int8 export load it as before).
    A head with a non-ReLU hidden layer (or none) is returned as it is."""
    import numpy as np

    if len(active.weights) < 2 or any(a != "relu" for a in active.activations[:-1]):
        return active
    d = active.weights[0].shape[1]
    eye = np.eye(d, dtype=np.float32)
    ws, bs = [], []
    for i, (w, b) in enumerate(zip(active.weights[:-1], active.biases[:-1])):  # noqa: B905 - Python 3.8 boards: no strict=
        if i == 0:
            w_new = np.vstack([w, eye, -eye])
        else:  # the previous layer's pass-through units are >= 0: relu keeps them as they are
            n_in = w.shape[1]
            w_new = np.zeros((w.shape[0] + 2 * d, n_in + 2 * d), np.float32)
            w_new[:w.shape[0], :n_in] = w
            w_new[w.shape[0]:, n_in:] = np.eye(2 * d, dtype=np.float32)
        ws.append(w_new.astype(np.float32))
        bs.append(np.concatenate([b, np.zeros(2 * d, np.float32)]).astype(np.float32))
    return Head(ws + [active.weights[-1]], bs + [active.biases[-1]], active.activations, active.labels)


# ---- where the heads live on the board --------------------------------------------------------------
def default_state_dir(bundle_root: str, bundle_id: str) -> str:
    """``<deploy root>/state/<bundle id[:16]>`` for a deployed bundle (``<root>/versions/<v>``).

    Not inside the version folder: that folder is hash-verified (the runner's ``--verify`` walks
    it; ``sha256sum`` checks it at deploy) and a redeploy of the same bundle is a new version
    folder; keyed by bundle id because a head is only valid on the features of the model it was
    fitted on. A bundle folder that was never deployed keeps its state in ``.state/`` inside it:
    hidden names are outside what ``--verify`` checks, and deploys never copy it."""
    real = os.path.realpath(bundle_root)
    parent = os.path.dirname(real)
    if os.path.basename(parent) == "versions":
        return os.path.join(os.path.dirname(parent), "state", bundle_id[:16])
    return os.path.join(real, ".state", bundle_id[:16])


class HeadState:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.heads = os.path.join(folder, "heads")

    def read(self) -> dict:
        path = os.path.join(self.folder, "active.json")
        try:
            with open(path) as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return {"schema": STATE_SCHEMA, "active": SHIPPED, "previous": None, "switched_at": None}
        except (OSError, ValueError) as exc:
            raise LearnError("bad_state", f"{path}: {exc}; remove it to return to the shipped head") from exc
        return state

    def head_meta(self, head_id: str) -> dict:
        with open(os.path.join(self.heads, head_id, "head.json")) as fh:
            return json.load(fh)

    def load(self, head_id: str, shipped: Head):
        """(head, its user features, their labels); the shipped head has none."""
        import numpy as np

        if head_id == SHIPPED:
            return shipped, np.zeros((0, shipped.weights[0].shape[1]), np.float32), []
        folder = os.path.join(self.heads, head_id)
        try:
            meta = self.head_meta(head_id)
            head = Head.load(os.path.join(folder, "head.npz"), meta["activations"], meta["labels"])
            with np.load(os.path.join(folder, "examples.npz"), allow_pickle=False) as z:
                x, y = np.asarray(z["features"], np.float32), [meta["labels"][int(i)] for i in z["labels"]]
        except (OSError, ValueError, KeyError) as exc:
            raise LearnError("bad_state", f"head {head_id} in {self.folder}: {exc}; roll back (--rollback) or remove the state "
                             "folder") from exc
        return head, x, y

    def clean(self) -> None:
        """Remove what a killed learn left (``*.partial`` heads, temporary state files)."""
        if os.path.isdir(self.heads):
            for name in os.listdir(self.heads):
                if name.endswith(".partial"):
                    shutil.rmtree(os.path.join(self.heads, name), ignore_errors=True)
        if os.path.isdir(self.folder):
            for name in os.listdir(self.folder):
                if name.startswith(".active.json."):
                    os.unlink(os.path.join(self.folder, name))

    def write_head(self, head: Head, x, labels, meta: dict) -> str:
        """Write a head (not yet active) and return its id."""
        import numpy as np

        head_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()
        partial = os.path.join(self.heads, head_id + ".partial")
        os.makedirs(partial)
        head.save(partial)
        index = {lab: i for i, lab in enumerate(head.labels)}
        np.savez(os.path.join(partial, "examples.npz"), features=np.asarray(x, np.float32),
                 labels=np.asarray([index[lab] for lab in labels], np.int32))
        _write_json(os.path.join(partial, "head.json"),
                    dict(meta, labels=head.labels, activations=head.activations, head_id=head_id))
        _fsync_dir(partial)
        os.rename(partial, os.path.join(self.heads, head_id))
        _fsync_dir(self.heads)
        return head_id

    def switch(self, active: str, previous, detail: dict) -> dict:
        """Make ``active`` the active head: one os.replace of active.json."""
        state = {"schema": STATE_SCHEMA, "active": active, "previous": previous,
                 "switched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        state.update(detail)
        tmp = os.path.join(self.folder, f".active.json.{os.getpid()}")
        _write_json(tmp, state)
        os.replace(tmp, os.path.join(self.folder, "active.json"))
        _fsync_dir(self.folder)
        return state

    def rollback(self) -> dict:
        state = self.read()
        previous = state.get("previous")
        if not previous:
            raise LearnError("no_previous", "no previous head to roll back to (active: {}); learn first".format(
                state.get("active", SHIPPED)))
        if previous != SHIPPED and not os.path.isdir(os.path.join(self.heads, previous)):
            raise LearnError("bad_state", f"the previous head {previous} is gone from {self.heads}")
        detail = {} if previous == SHIPPED else _head_summary(self.head_meta(previous))
        return self.switch(previous, state.get("active", SHIPPED), detail)

    def prune(self, keep) -> None:
        if not os.path.isdir(self.heads):
            return
        names = sorted(n for n in os.listdir(self.heads) if not n.endswith(".partial"))
        for name in names[:-KEEP_HEADS]:
            if name not in keep:
                shutil.rmtree(os.path.join(self.heads, name), ignore_errors=True)


def _head_summary(meta: dict) -> dict:
    return {"labels": meta.get("labels"), "n_user_examples": meta.get("n_user_examples"),
            "learned_at": meta.get("learned_at")}


def _write_json(path: str, data) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def peak_rss_bytes() -> int:
    """This process's own peak RSS. On Linux that is VmHWM: ru_maxrss survives exec, so a runner
    started from a large process (the host target's codesign, 1.2 GB) reported its parent's RSS."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # kB on Linux


# ---- one learn ------------------------------------------------------------------------------------
def learn(path, shipped: Head, anchor, features_of, state: HeadState, max_anchor_drop: float,
          holdout: float = DEFAULT_HOLDOUT, emulated: bool = False) -> dict:
    """Learn from the examples in ``path``; return the report (metrics only: no texts, no
    features). ``anchor`` is (features, label names, check mask); ``features_of(texts)`` is
    (features [n, d], number of texts truncated to the model's max length)."""
    import numpy as np

    started = time.perf_counter()
    texts, labels = read_examples(path)
    state.clean()
    current = state.read()
    active_id = current.get("active", SHIPPED)
    active, old_x, old_labels = state.load(active_id, shipped)
    t0 = time.perf_counter()
    x, truncated = features_of(texts)
    extract_ms = (time.perf_counter() - t0) * 1e3
    train, held = holdout_split(labels, holdout)
    a_x, a_labels, a_check = anchor
    fit_idx = [i for i in range(len(a_labels)) if not a_check[i]]
    chk_idx = [i for i in range(len(a_labels)) if a_check[i]]
    t0 = time.perf_counter()
    new = refit(active,
                np.vstack([old_x, x[train]]) if len(old_x) else x[train],
                list(old_labels) + [labels[i] for i in train],
                a_x[fit_idx], [a_labels[i] for i in fit_idx])
    fit_ms = (time.perf_counter() - t0) * 1e3
    held_labels = [labels[i] for i in held]
    chk_x, chk_labels = a_x[chk_idx], [a_labels[i] for i in chk_idx]
    report = {
        "n_examples": len(texts), "n_train": len(train), "n_heldout": len(held),
        "truncated": int(truncated), "labels": sorted(set(labels)),
        "new_classes": [lab for lab in new.labels if lab not in active.labels],
        "before": accuracy(active, x[held], held_labels), "after": accuracy(new, x[held], held_labels),
        "anchor_shipped": accuracy(shipped, chk_x, chk_labels),
        "anchor_before": accuracy(active, chk_x, chk_labels), "anchor_after": accuracy(new, chk_x, chk_labels),
        "max_anchor_drop": max_anchor_drop, "active_before": active_id, "method":
        (f"softmax output layer warm-started from the active head, L2 {L2_TO_INIT:g} towards it, hidden layers and "
         "standardiser as shipped") if not any(lab not in active.labels for lab in new.labels) else
        ("new class: old output rows frozen, new rows fitted on the hidden units plus a ReLU pass-through of the "
         "features ([I; -I] units, zero weight in the old rows), imprinted from the shrunk-LDA direction of their "
         f"examples and pulled towards it (L2 {L2_NEW:g})"),
    }
    drop = report["anchor_shipped"]["accuracy"] - report["anchor_after"]["accuracy"]
    report["anchor_drop"] = drop
    report["switched"] = bool(drop <= max_anchor_drop + 1e-12)
    if report["switched"]:
        meta = {"learned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "parent": active_id,
                "n_user_examples": len(old_labels) + len(train),
                "metrics": {k: report[k] for k in ("before", "after", "anchor_after", "anchor_drop")}}
        all_labels = list(old_labels) + [labels[i] for i in train]
        all_x = np.vstack([old_x, x[train]]) if len(old_x) else x[train]
        head_id = state.write_head(new, all_x, all_labels, meta)
        state.switch(head_id, active_id, _head_summary(dict(meta, labels=new.labels)))
        state.prune(keep={head_id, active_id})
        report["active"] = head_id
        report["reason"] = "anchor accuracy {:.4f} vs shipped {:.4f}: drop {:.4f} <= {:g}".format(
            report["anchor_after"]["accuracy"], report["anchor_shipped"]["accuracy"], drop, max_anchor_drop)
    else:
        report["active"] = active_id
        report["reason"] = ("refused: the new head would forget: anchor accuracy {:.4f} vs shipped {:.4f} is a drop "
                            "of {:.4f} > {:g}; the active head stays {}").format(
            report["anchor_after"]["accuracy"], report["anchor_shipped"]["accuracy"], drop, max_anchor_drop,
            active_id)
    report.update({"learn_ms": (time.perf_counter() - started) * 1e3, "extract_ms": extract_ms,
                   "fit_ms": fit_ms, "peak_rss_bytes": peak_rss_bytes(), "emulated": bool(emulated)})
    return report
