"""The ``baseline`` command group, mounted on a throwaway main group."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from toolchain.cli_baseline import baseline
from toolchain.errors import ConfigError


@pytest.fixture
def cli():
    @click.group()
    def main() -> None:
        pass

    main.add_command(baseline)
    return main


def test_finetune_command_writes_json(cli, tiny_bert, toy_spec, tmp_path):
    out = tmp_path / "out" / "ft.json"
    result = CliRunner().invoke(
        cli,
        [
            "baseline",
            "finetune",
            "--model",
            str(tiny_bert),
            "--dataset",
            str(toy_spec),
            "--depth",
            "1",
            "--max-train",
            "60",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--max-length",
            "16",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "depth 1/2" in result.output and "test" in result.output
    data = json.loads(out.read_text())
    assert data["baseline"] == "finetune"
    assert data["depth"] == 1 and data["train_size"] == 60 and data["config"]["seed"] == 3
    assert data["config"]["lr"] == 1e-3
    assert isinstance(data["loss_curve"], list) and data["steps"] == 2
    assert 0 <= data["test_acc"] <= 1


def test_last_layer_command_json_to_stdout(cli, tiny_bert, toy_spec):
    result = CliRunner().invoke(
        cli,
        [
            "baseline",
            "last-layer",
            "--model",
            str(tiny_bert),
            "--dataset",
            str(toy_spec),
            "--max-per-class",
            "20",
            "--max-length",
            "16",
            "--json",
            "-",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline"] == "last-layer" and data["train_size"] == 60
    assert set(data["scores"]) == {"cls", "mean"}


def test_majority_command(cli, toy_spec):
    result = CliRunner().invoke(cli, ["baseline", "majority", "--dataset", str(toy_spec)])
    assert result.exit_code == 0, result.output
    assert "majority class" in result.output and "33.33%" in result.output


def test_errors_propagate_to_the_main_cli(cli, tiny_bert, toy_spec):
    result = CliRunner().invoke(
        cli,
        [
            "baseline",
            "finetune",
            "--model",
            str(tiny_bert),
            "--dataset",
            str(toy_spec),
            "--depth",
            "7",
        ],
    )
    assert isinstance(result.exception, ConfigError)
    assert "depth 7" in str(result.exception)
