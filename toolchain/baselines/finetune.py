"""Full fine-tuning of a backbone with a classification head: the accuracy the method is measured
against, and its training cost.

The recipe is the standard one: the encoder's last used layer, pooled (mean over real tokens, or
[CLS]) → dropout → linear; AdamW with weight decay on all but biases and LayerNorm weights; linear
warm-up then linear decay; a few epochs with early stopping on validation accuracy (the best
weights are kept in memory and restored). Batches are length-bucketed with dynamic padding.

``depth`` fine-tunes the backbone truncated at that depth: the encoder layers above it are
dropped from the model, so that a fine-tuned model costs what a frozen candidate at that depth
costs at inference. By default every training row is used (``finetune_rows`` in the result says
how many were); ``max_train`` subsamples train (stratified, seeded) for quick runs only.
``min_epochs`` keeps early stopping from ending a run before that many epochs. Each epoch's
validation accuracy and loss, mean training loss, step and wall time are recorded
(``epoch_curve``), and so is the peak RSS from ``getrusage`` besides the reset-able VmHWM.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.dataset import Dataset, Split
from ..errors import ConfigError, DatasetError, ModelLoadError
from ..features.backbone import ModelRef, load_backbone
from ..features.extract import pad_batch, plan_batches, tokenize
from ..heads.base import accuracy, macro_f1
from ..progress import progress_bar
from .measure import PeakMemory, peak_rss_bytes, stratified_subsample

log = logging.getLogger(__name__)
POOLINGS = ("mean", "cls")
_NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight", "layer_norm.weight", "norm.weight")
# Where encoders keep their stack of layers (BERT/RoBERTa/MiniLM, DistilBERT, others).
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of one fine-tuning run (defaults: the standard recipe)."""

    depth: int | None = None  # None: the full backbone
    max_train: int | None = None  # stratified subsample of train to this size
    epochs: int = 3
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 64
    pooling: str = "mean"
    dropout: float = 0.1
    patience: int = 1  # epochs without a better validation accuracy before stopping
    min_epochs: int = 1  # no early stop before this many epochs
    max_steps: int | None = None  # cap on optimisation steps (over all epochs)
    seed: int = 0
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:N
    log_every: int = 10  # one loss-curve point per this many steps

    def check(self) -> None:
        problems = []
        if self.depth is not None and self.depth < 0:
            problems.append(f"depth {self.depth} must be 0 or more")
        if self.max_train is not None and self.max_train < 2:
            problems.append(f"max_train {self.max_train} must be at least 2")
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "max_length",
            "patience",
            "min_epochs",
            "log_every",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} must be at least 1")
        if self.min_epochs > self.epochs:
            problems.append(f"min_epochs {self.min_epochs} must not exceed epochs {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps {self.max_steps} must be at least 1")
        if not self.lr > 0:
            problems.append(f"lr {self.lr} must be positive")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction {self.warmup_fraction} must be in [0, 1)")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout {self.dropout} must be in [0, 1)")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling '{self.pooling}' is not one of {', '.join(POOLINGS)}")
        if problems:
            raise ConfigError("fine-tuning options: " + "; ".join(problems))


@dataclass
class FinetuneResult:
    """What a fine-tuning run measured. Accuracies are fractions; test ones are None when the
    dataset has no test split."""

    model: str
    dataset: str
    depth: int
    full_depth: int
    pooling: str
    max_length: int
    device: str
    train_size: int  # rows trained on (== finetune_rows)
    train_split_rows: int  # rows of the train split (finetune_rows is less only with max_train)
    validation_size: int
    test_size: int
    val_acc: float  # of the restored (best) epoch
    test_acc: float | None
    test_macro_f1: float | None
    epochs_run: int
    best_epoch: int  # 1-based
    steps: int
    stopped_early: bool
    train_seconds: float  # wall time: optimisation plus the per-epoch validation passes
    train_cpu_seconds: float  # process CPU time of the same (all threads); robust to a busy host
    test_seconds: float
    peak_memory_bytes: int
    peak_memory_source: str  # cuda_max_allocated | rss_hwm (reset at start) | rss_hwm_process
    peak_rss_bytes: int  # resource.getrusage(RUSAGE_SELF).ru_maxrss (the run's peak once VmHWM is reset; see measure.py)
    backbone_params: int
    head_params: int
    loss_curve: list[tuple[int, float]] = field(
        default_factory=list
    )  # (step, mean loss since last)
    val_curve: list[float] = field(default_factory=list)  # validation accuracy per epoch
    # Per epoch: {epoch, step, val_acc, val_loss, train_loss, seconds (wall, cumulative)}
    epoch_curve: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["loss_curve"] = [[s, v] for s, v in self.loss_curve]
        out["finetune_rows"] = self.train_size
        return out

    @property
    def finetune_rows(self) -> int:
        return self.train_size


def _find_layers(model):
    """(parent module, attribute name, layers) of the encoder's stack of layers, or None."""
    for path in _LAYER_PATHS:
        *parents, name = path.split(".")
        obj = model
        for part in parents:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is None:
            continue
        layers = getattr(obj, name, None)
        if layers is not None and hasattr(layers, "__getitem__") and hasattr(layers, "__len__"):
            return obj, name, layers
    return None


def truncate_backbone(model, depth: int):
    """Drop the encoder layers above ``depth`` in place (and set ``config.num_hidden_layers``);
    returns the model. Depth 0 keeps the embeddings only."""
    found = _find_layers(model)
    if found is None:
        raise ModelLoadError(
            f"backbone {type(model).__name__}: cannot find its stack of encoder layers "
            f"(looked for {', '.join(_LAYER_PATHS)}); fine-tune it at full depth (no --depth)"
        )
    parent, name, layers = found
    n = len(layers)
    if not 0 <= depth <= n:
        raise ConfigError(
            f"depth {depth} is outside this backbone's 0..{n} layers; pick a depth in that range"
        )
    setattr(parent, name, layers[:depth])
    model.config.num_hidden_layers = depth
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = list(model.config.layer_types)[:depth]
    return model


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"device '{device}' is not a torch device; use auto, cpu or cuda"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{device}': no CUDA device is available here; use --device cpu or auto"
        )
    return dev


def _train_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches: shuffle, sort within pools of 50 batches by length,
    cut into batches, shuffle the batches (so padding stays small and order stays random)."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pool(hidden, mask, pooling: str):
    if pooling == "cls":
        return hidden[:, 0, :]
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _logits(net, input_ids, mask, pooling: str):
    out = net["backbone"](input_ids=input_ids, attention_mask=mask)
    return net["head"](net["dropout"](_pool(out.last_hidden_state, mask, pooling)))


def _to_tensors(ids, batch, pad_id, device):
    import torch

    input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
    return torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device)


def predict(
    net, ids: list[list[int]], pad_id: int, pooling: str, batch_size: int, device
) -> np.ndarray:
    """Class predictions for tokenized inputs, in input order."""
    return predict_with_loss(net, ids, None, pad_id, pooling, batch_size, device)[0]


def predict_with_loss(
    net, ids: list[list[int]], labels, pad_id: int, pooling: str, batch_size: int, device
) -> tuple[np.ndarray, float | None]:
    """(class predictions in input order, mean cross-entropy against ``labels`` or None)."""
    import torch

    lengths = np.array([len(s) for s in ids])
    pred = np.empty(len(ids), dtype=np.int64)
    loss_sum = 0.0
    net.eval()
    with torch.inference_mode():
        for batch in plan_batches(lengths, batch_size, bucket=True):
            input_ids, mask = _to_tensors(ids, batch, pad_id, device)
            logits = _logits(net, input_ids, mask, pooling)
            pred[batch] = logits.argmax(1).cpu().numpy()
            if labels is not None:
                y = torch.from_numpy(np.asarray(labels)[batch].astype(np.int64)).to(logits.device)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return pred, (loss_sum / max(1, len(ids)) if labels is not None else None)


def _param_groups(net, weight_decay: float):
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(_NO_DECAY) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def training_step(
    net, optimizer, input_ids, mask, labels, pooling: str, max_grad_norm: float = 1.0
) -> float:
    """One optimisation step on one batch (net in train mode); returns the loss before it."""
    import torch

    logits = _logits(net, input_ids, mask, pooling)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def linear_schedule(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up from 0 to 1 over ``warmup_steps``, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def build_classifier(model, n_classes: int, dropout: float, seed: int):
    """The backbone plus dropout and a linear head, as one ``torch.nn.ModuleDict``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    head = torch.nn.Linear(hidden, n_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, getattr(model.config, "initializer_range", 0.02), generator=gen)
        head.bias.zero_()
    return torch.nn.ModuleDict(
        {"backbone": model, "dropout": torch.nn.Dropout(dropout), "head": head}
    )


def _subsample(split: Split, max_train: int | None, seed: int) -> Split:
    if max_train is None or max_train >= len(split):
        return split
    idx = stratified_subsample(split.labels, max_train, seed)
    return Split(tuple(split.texts[i] for i in idx), split.labels[idx])


def finetune(
    dataset: Dataset, model: ModelRef, config: FinetuneConfig | None = None
) -> FinetuneResult:
    """Fine-tune ``model`` (truncated at ``config.depth`` when set) on ``dataset``; restore the
    epoch with the best validation accuracy and evaluate it on test."""
    import torch

    config = config or FinetuneConfig()
    config.check()
    train = _subsample(dataset.train, config.max_train, config.seed)
    if len(np.unique(train.labels)) < 2:
        raise DatasetError(
            f"dataset '{dataset.name}': the fine-tuning train set of {len(train)} has a single "
            "class; raise --max-train or use more training data"
        )
    device = _resolve_device(config.device)
    torch.manual_seed(config.seed)
    tokenizer, backbone = load_backbone(model)
    full_depth = int(backbone.config.num_hidden_layers)
    depth = full_depth if config.depth is None else config.depth
    if depth != full_depth:
        truncate_backbone(backbone, depth)
    net = build_classifier(backbone, dataset.n_classes, config.dropout, config.seed).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_ids = tokenize(tokenizer, train.texts, config.max_length)
    val_ids = tokenize(tokenizer, dataset.validation.texts, config.max_length)
    lengths = np.array([len(s) for s in train_ids])
    y_train = torch.from_numpy(train.labels.astype(np.int64))

    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    warmup = int(round(config.warmup_fraction * total))
    optimizer = torch.optim.AdamW(_param_groups(net, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, warmup))
    rng = np.random.default_rng(config.seed)
    memory = PeakMemory(device)
    memory.start()
    log.info(
        "fine-tuning %s (depth %d of %d) on %s: %d train, %d steps on %s",
        model.name,
        depth,
        full_depth,
        dataset.name,
        len(train_ids),
        total,
        device,
    )

    loss_curve: list[tuple[int, float]] = []
    val_curve: list[float] = []
    epoch_curve: list[dict] = []
    best_acc, best_epoch, best_state, bad = -1.0, 0, None, 0
    step, running, running_n, stopped_early = 0, 0.0, 0, False
    started, cpu_started = time.perf_counter(), time.process_time()
    epochs_run = 0
    with progress_bar(f"fine-tuning {model.name} (depth {depth})", total) as advance:
        for epoch in range(1, config.epochs + 1):
            net.train()
            epoch_loss, epoch_n = 0.0, 0
            for batch in _train_batches(lengths, config.batch_size, rng):
                input_ids, mask = _to_tensors(train_ids, batch, pad_id, device)
                loss = training_step(
                    net, optimizer, input_ids, mask, y_train[batch].to(device), config.pooling
                )
                scheduler.step()
                step += 1
                running += loss
                running_n += 1
                epoch_loss += loss
                epoch_n += 1
                if step % config.log_every == 0:
                    loss_curve.append((step, running / running_n))
                    running, running_n = 0.0, 0
                advance()
                if step >= total:
                    break
            if running_n:
                loss_curve.append((step, running / running_n))
                running, running_n = 0.0, 0
            epochs_run = epoch
            pred, val_loss = predict_with_loss(net, val_ids, dataset.validation.labels, pad_id,
                                               config.pooling, config.eval_batch_size, device)
            val_acc = accuracy(pred, dataset.validation.labels)
            val_curve.append(val_acc)
            epoch_curve.append({"epoch": epoch, "step": step, "val_acc": val_acc,
                                "val_loss": val_loss,
                                "train_loss": epoch_loss / max(1, epoch_n),
                                "seconds": time.perf_counter() - started})
            log.info("epoch %d: validation accuracy %.4f (step %d)", epoch, val_acc, step)
            if val_acc > best_acc:
                best_acc, best_epoch, bad = val_acc, epoch, 0
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()
                }
            else:
                bad += 1
                if bad >= config.patience and epoch >= config.min_epochs:
                    stopped_early = epoch < config.epochs and step < total
                    break
            if step >= total:
                break
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    if best_epoch != epochs_run:
        net.load_state_dict(best_state)
        log.info(
            "restored the weights of epoch %d (validation accuracy %.4f)", best_epoch, best_acc
        )

    test_acc = test_f1 = None
    test_started = time.perf_counter()
    if dataset.test is not None:
        test_ids = tokenize(tokenizer, dataset.test.texts, config.max_length)
        pred = predict(net, test_ids, pad_id, config.pooling, config.eval_batch_size, device)
        test_acc = accuracy(pred, dataset.test.labels)
        test_f1 = macro_f1(pred, dataset.test.labels, dataset.n_classes)
    test_seconds = time.perf_counter() - test_started
    peak = memory.peak()
    peak_rss = peak_rss_bytes()
    cfg = asdict(config)
    cfg["threads"] = torch.get_num_threads() if device.type == "cpu" else None
    cfg["cpu_count"] = os.cpu_count()
    return FinetuneResult(
        model=model.name,
        dataset=dataset.name,
        depth=depth,
        full_depth=full_depth,
        pooling=config.pooling,
        max_length=config.max_length,
        device=str(device),
        train_size=len(train),
        train_split_rows=len(dataset.train),
        validation_size=len(dataset.validation),
        test_size=len(dataset.test) if dataset.test is not None else 0,
        val_acc=best_acc,
        test_acc=test_acc,
        test_macro_f1=test_f1,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        steps=step,
        stopped_early=stopped_early,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        test_seconds=test_seconds,
        peak_memory_bytes=peak,
        peak_memory_source=memory.source,
        peak_rss_bytes=peak_rss,
        backbone_params=sum(p.numel() for p in net["backbone"].parameters()),
        head_params=sum(p.numel() for p in net["head"].parameters()),
        loss_curve=loss_curve,
        val_curve=val_curve,
        epoch_curve=epoch_curve,
        config=cfg,
    )
