"""``nas_warmstart.run(RunConfig(...))``: the whole job as a library, the same as the command.

One tiny budget (mlp on digits, 2 trials of 1 epoch, a cold baseline, a conversion of a few
steps, no ONNX) run twice in fresh folders: once through ``nas-warmstart run`` in a
subprocess, once through the library in this process. Same trials, same winner, same lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nas_warmstart as nw
from nas_warmstart import InvalidArgumentError, RunConfig, RunResult

SEED = 'space:mlp:{"resolution":8,"num_layers":2,"width_0":128,"width_1":64,"act":"relu","norm":false}'
SETTINGS = dict(space="mlp", dataset="digits", trials=2, epochs=1, objectives=("accuracy", "params"),
                seed_pool=(SEED,), seed_epochs=1, baseline_cold=True, convert=True, convert_steps=3,
                convert_epochs=0, onnx=False)
ARGV = ["run", "mlp", "--dataset", "digits", "--trials", "2", "--epochs", "1", "--objectives", "accuracy,params",
        "--seed-pool", SEED, "--seed-epochs", "1", "--baseline-cold", "--convert", "--convert-steps", "3",
        "--convert-epochs", "0", "--no-onnx"]


def _plain(line: str, root: Path) -> str:
    """A printed line without what differs between two equal runs: times, latencies, folders."""
    line = line.replace(str(root), "ROOT")
    line = re.sub(r"\(\d+\.\d s\)", "(T s)", line)
    return re.sub(r"latency [\d.]+ ms", "latency T ms", line)


def _trials(records: list[dict]) -> list[tuple]:
    return [(r["number"], r["state"], r["values"], r["architecture"], r["source"], r["pool_entry"])
            for r in records]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    cli, lib = tmp_path_factory.mktemp("cli"), tmp_path_factory.mktemp("lib")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "nas_warmstart", *ARGV, "--pool", str(cli / "pool"),
                           "--out", str(cli / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines: list[str] = []
    result = nw.run(RunConfig(**SETTINGS, pool=str(lib / "pool"), out=str(lib / "out")),
                    echo=lines.append, progress=False)
    return (cli, proc.stdout), (lib, result, lines)


def test_library_run_matches_the_command(both):
    (cli, stdout), (lib, result, lines) = both
    assert isinstance(result, RunResult)
    ran = json.loads((cli / "out" / "run.json").read_text())
    assert _trials(result.trials["warm"]) == _trials(ran["studies"]["warm"])
    assert _trials(result.trials["cold"]) == _trials(ran["studies"]["cold"])
    for key in ("trial", "origin", "architecture", "spec", "val_accuracy", "test_accuracy", "params", "files"):
        assert result.winner[key] == ran["winner"][key], key
    assert result.winner_rule == ran["winner_rule"]
    # the command prints the library's lines, then a blank line, the summary and its "done" line
    printed = [_plain(x, cli) for x in stdout.splitlines()]
    ours = [_plain(x, lib) for x in "\n".join([*lines, "", *result.summary_lines()]).splitlines()]
    assert printed[:-1] == ours
    assert printed[-1].startswith("done in ")
    assert result.files["html"].is_file() and result.exported["weights"] is not None
    assert result.exported["weights"].is_file() and result.exported["onnx"] is None
    assert json.loads(result.files["run"].read_text())["winner"]["trial"] == result.winner["trial"]


def test_library_rerun_continues_without_training(both):
    _, (_lib, result, _lines) = both
    lines: list[str] = []
    again = nw.run(result.config, echo=lines.append, progress=False)
    assert any("2 of 2 trials done, nothing to run" in x for x in lines)
    assert any("convert: done in an earlier run" in x for x in lines)
    assert _trials(again.trials["warm"]) == _trials(result.trials["warm"])
    assert again.winner["trial"] == result.winner["trial"]


def test_config_is_plain_json():
    c = RunConfig("mlp", objectives="accuracy, params", seed_pool=SEED)
    assert c.objectives == ("accuracy", "params") and c.seed_pool == (SEED,)
    assert json.loads(json.dumps(dataclasses.asdict(c)))["space"] == "mlp"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.trials = 3  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("trials", 0, "--trials must be >= 1, got 0"),
    ("epochs", 0, "--epochs must be >= 1, got 0"),
    ("seed_epochs", 0, "--seed-epochs must be >= 1, got 0"),
    ("seed", -1, "--seed must be >= 0, got -1"),
    ("trials", 2.5, "--trials must be an integer, got 2.5"),
    ("backend", "dask", "--backend takes optuna or ray, got 'dask'"),
    ("space", "", "--space must be a non-empty name or path, got ''"),
    ("out", " ", "--out must be a non-empty name or path, got ' '"),
    ("guide", "pool:x", "--guide chooses the network to convert from; it needs --convert"),
    ("convert_steps", 3, "--convert-steps sets the conversion; it needs --convert"),
    ("convert_epochs", 1, "--convert-epochs sets the conversion; it needs --convert"),
])
def test_one_clear_error_per_bad_field(field, value, message):
    with pytest.raises(InvalidArgumentError) as e:
        RunConfig(**{"space": "mlp", field: value})
    assert str(e.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"convert": True, "guide": "timm:resnet18"}, "--guide takes best or pool:<entry>, got 'timm:resnet18'"),
    ({"convert": True, "convert_steps": 0}, "--convert-steps must be >= 1, got 0"),
    ({"convert": True, "convert_epochs": -1}, "--convert-epochs must be >= 0, got -1"),
])
def test_conversion_settings_are_checked(kwargs, message):
    with pytest.raises(InvalidArgumentError) as e:
        RunConfig("mlp", **kwargs)
    assert str(e.value) == message
