"""Fine-tuning baseline on a tiny random BERT: optimisation, truncation, early stopping."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from toolchain.baselines.finetune import (
    FinetuneConfig,
    build_classifier,
    finetune,
    linear_schedule,
    stratified_subsample,
    training_step,
    truncate_backbone,
)
from toolchain.errors import ConfigError
from toolchain.features.backbone import load_backbone, resolve_model

# The package exports the function ``finetune``, which shadows the module's name.
ft = importlib.import_module("toolchain.baselines.finetune")


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_one_step_moves_loss_and_weights(tiny_bert, toy_dataset):
    import torch

    tokenizer, backbone = load_backbone(resolve_model(str(tiny_bert)))
    torch.manual_seed(0)
    net = build_classifier(backbone, toy_dataset.n_classes, dropout=0.0, seed=0)
    texts, labels = toy_dataset.train.texts[:32], toy_dataset.train.labels[:32]
    ids = ft.tokenize(tokenizer, texts, 32)
    input_ids, mask = ft._to_tensors(ids, np.arange(len(ids)), tokenizer.pad_token_id, "cpu")
    y = torch.from_numpy(labels)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def loss_now() -> float:
        net.eval()
        with torch.no_grad():
            return float(
                torch.nn.functional.cross_entropy(ft._logits(net, input_ids, mask, "mean"), y)
            )

    start = loss_now()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net.train()
    reported = training_step(net, optimizer, input_ids, mask, y, "mean")
    assert 0 < reported < 10  # the batch's loss in train mode (the backbone's dropout is on)
    after = loss_now()
    assert after < start - 1e-3
    after_state = net.state_dict()
    assert not torch.equal(before["head.weight"], after_state["head.weight"])
    assert not torch.equal(
        before["backbone.encoder.layer.1.output.dense.weight"],
        after_state["backbone.encoder.layer.1.output.dense.weight"],
    )


def test_finetune_beats_chance_on_separable_toy_set(tiny_bert, toy_dataset):
    config = FinetuneConfig(
        epochs=2,
        lr=3e-3,
        batch_size=16,
        max_length=16,
        patience=2,
        seed=0,
        device="cpu",
        log_every=4,
    )
    result = finetune(toy_dataset, resolve_model(str(tiny_bert)), config)
    chance = 1 / toy_dataset.n_classes
    assert result.test_acc >= 0.8 > chance + 0.4, result
    assert result.val_acc >= 0.8
    assert result.test_macro_f1 >= 0.75
    assert result.depth == result.full_depth == 2
    assert result.train_size == len(toy_dataset.train) == 120
    assert result.steps == 2 * 8  # ceil(120 / 16) per epoch
    assert result.loss_curve[-1][1] < result.loss_curve[0][1]
    assert result.peak_memory_bytes > 0 and result.train_seconds > 0
    assert result.device == "cpu"


def test_truncation_drops_layers(tiny_bert):
    import torch

    _, model = load_backbone(resolve_model(str(tiny_bert)))
    full = _n_params(model)
    truncate_backbone(model, 1)
    assert len(model.encoder.layer) == 1
    assert model.config.num_hidden_layers == 1
    assert _n_params(model) < full
    ids = torch.tensor([[101, 4937, 102]])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    assert len(out.hidden_states) == 2
    with pytest.raises(ConfigError, match="depth 5"):
        truncate_backbone(model, 5)


def test_finetune_at_depth(tiny_bert, toy_dataset):
    ref = resolve_model(str(tiny_bert))
    base = dict(epochs=1, max_steps=2, max_length=16, device="cpu")
    full = finetune(toy_dataset, ref, FinetuneConfig(**base))
    cut = finetune(toy_dataset, ref, FinetuneConfig(depth=1, **base))
    assert cut.depth == 1 and cut.full_depth == 2
    assert cut.backbone_params < full.backbone_params
    assert cut.steps == full.steps == 2


def _script_validation(monkeypatch, accuracies, dataset):
    """Make the validation passes score ``accuracies`` in turn (1.0: all right, 0.0: all
    wrong); returns the weights each validation pass saw. The test pass runs for real."""
    import torch

    snapshots = []

    def scripted(net, ids, labels, pad_id, pooling, batch_size, device):
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        y = dataset.validation.labels
        right = accuracies[len(snapshots) - 1] == 1.0
        return (y.copy() if right else (y + 1) % dataset.n_classes), 0.5

    monkeypatch.setattr(ft, "predict_with_loss", scripted)
    return snapshots, torch


def test_early_stopping_restores_best_epoch(tiny_bert, toy_dataset, monkeypatch):
    real_predict = ft.predict_with_loss
    snapshots, torch = _script_validation(monkeypatch, [1.0, 0.0], toy_dataset)

    def test_pass(net, ids, pad_id, pooling, batch_size, device):
        # the test pass sees the weights of epoch 1, not those of epoch 2
        state = net.state_dict()
        for k, v in state.items():
            assert torch.equal(v, snapshots[0][k]), k
        assert any(not torch.equal(v, snapshots[1][k]) for k, v in state.items())
        return real_predict(net, ids, None, pad_id, pooling, batch_size, device)[0]

    monkeypatch.setattr(ft, "predict", test_pass)
    result = finetune(
        toy_dataset,
        resolve_model(str(tiny_bert)),
        FinetuneConfig(epochs=3, max_length=16, lr=1e-3, device="cpu"),
    )
    assert result.val_curve == [1.0, 0.0]
    assert result.epochs_run == 2 and result.best_epoch == 1 and result.stopped_early
    assert result.val_acc == 1.0
    assert result.steps == 2 * 4  # ceil(120 / 32) per epoch


def test_min_epochs_holds_off_early_stopping(tiny_bert, toy_dataset, monkeypatch):
    _script_validation(monkeypatch, [1.0, 0.0, 0.0, 0.0, 0.0], toy_dataset)
    result = finetune(
        toy_dataset,
        resolve_model(str(tiny_bert)),
        FinetuneConfig(epochs=5, min_epochs=3, patience=1, max_length=16, device="cpu"),
    )
    # worse at epoch 2, but no stop before epoch 3; stopped there (epoch 4 and 5 never ran)
    assert result.epochs_run == 3 and result.best_epoch == 1 and result.stopped_early
    assert result.val_curve == [1.0, 0.0, 0.0]


def test_every_epoch_is_recorded_and_rows_default_to_the_whole_split(tiny_bert, toy_dataset):
    result = finetune(
        toy_dataset,
        resolve_model(str(tiny_bert)),
        FinetuneConfig(epochs=2, patience=2, max_length=16, batch_size=32, device="cpu"),
    )
    out = result.to_dict()
    assert out["finetune_rows"] == result.train_split_rows == len(toy_dataset.train) == 120
    assert [e["epoch"] for e in result.epoch_curve] == [1, 2]
    assert [e["step"] for e in result.epoch_curve] == [4, 8]  # ceil(120 / 32) per epoch
    assert [e["val_acc"] for e in result.epoch_curve] == result.val_curve
    for e in result.epoch_curve:
        assert e["val_loss"] > 0 and e["train_loss"] > 0
    assert result.epoch_curve[0]["seconds"] <= result.epoch_curve[1]["seconds"]
    # getrusage's peak is the lifetime one where the kernel keeps it apart from VmHWM; where the
    # VmHWM reset also resets it, the two read one high-water mark at two moments (seen in CI:
    # 76 KiB apart). Either way it is not meaningfully below the run's own peak.
    assert result.peak_memory_bytes > 0 and result.peak_rss_bytes >= 0.99 * result.peak_memory_bytes


def test_max_train_subsamples_stratified(tiny_bert, toy_dataset):
    result = finetune(
        toy_dataset,
        resolve_model(str(tiny_bert)),
        FinetuneConfig(max_train=30, epochs=1, max_length=16, device="cpu"),
    )
    assert result.train_size == result.to_dict()["finetune_rows"] == 30
    assert result.train_split_rows == 120
    assert result.steps == 1


def test_stratified_subsample():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_subsample(labels, 20, seed=0)
    assert len(idx) == 20 and len(set(idx)) == 20
    assert np.bincount(labels[idx]).tolist() == [12, 6, 2]
    assert np.array_equal(idx, stratified_subsample(labels, 20, seed=0))
    assert not np.array_equal(idx, stratified_subsample(labels, 20, seed=1))
    rare = stratified_subsample(np.array([0] * 98 + [1, 2]), 10, seed=0)
    assert len(rare) == 10 and set(np.array([0] * 98 + [1, 2])[rare]) == {0, 1, 2}
    assert len(stratified_subsample(labels, 500)) == 100


def test_schedule_warms_up_then_decays():
    f = linear_schedule(total_steps=10, warmup_steps=2)
    values = [f(s) for s in range(10)]
    assert values[0] == 0.5 and values[1] == 1.0
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))
    assert values[-1] > 0 and f(10) == 0


def test_bad_options_are_config_errors(tiny_bert, toy_dataset):
    ref = resolve_model(str(tiny_bert))
    with pytest.raises(ConfigError, match="pooling 'max'"):
        finetune(toy_dataset, ref, FinetuneConfig(pooling="max"))
    with pytest.raises(ConfigError, match="min_epochs 4 must not exceed epochs 3"):
        finetune(toy_dataset, ref, FinetuneConfig(epochs=3, min_epochs=4))
    with pytest.raises(ConfigError, match="outside this backbone's 0..2"):
        finetune(toy_dataset, ref, FinetuneConfig(depth=3, device="cpu"))
