"""Progress on long work: a bar on a terminal, one line per step elsewhere, nothing when quiet.

The helper itself, then the places that use it on the smallest real work: a conversion of a
tiny MLP (three steps per stage), the pipeline's seeding (one epoch of a small MLP) and the
``convert`` command with and without ``--json``. Seconds in all.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart import InvalidArgumentError, RunConfig
from nas_warmstart._progress import Progress, ProgressTo, iterate, progress_to
from nas_warmstart.data import load_dataset
from nas_warmstart.pipeline._run import _seed_pool

from .test_cli_convert import run as cli

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = {"resolution": 8, "num_layers": 2, "width_0": 64, "width_1": 32, "act": "relu", "norm": False}
TARGET = "space:mlp:" + json.dumps({**MLP, "width_0": 32})
FAST = {"steps_per_stage": 3, "finetune_epochs": 1, "batch_size": 64, "bn_images": 64}


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (where tqdm draws its bar)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def piped(monkeypatch):
    """stderr is not a terminal (a pipe, a log file), whatever runs the tests."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    return err


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


def mlp(data, config=MLP, seed=0):
    torch.manual_seed(seed)
    return nw.ArchSpec.space("mlp", config, num_classes=data.num_classes, in_chans=data.in_chans).build()


@pytest.fixture(scope="module")
def guide(data):
    g = mlp(data)
    nw.fit(g, data, epochs=1, batch_size=64, progress=False, bn_images=64)
    return g


# ------------------------------------------------------------------------------ the helper


def test_piped_one_line_per_step_through_the_echo_and_no_bar(piped):
    lines: list[str] = []
    with Progress(3, desc="work", unit="step", progress=lines.append) as bar:
        for i in range(3):
            bar.step(f"work: step {i + 1}/3 done", loss="0.5")
    assert lines == ["work: step 1/3 done", "work: step 2/3 done", "work: step 3/3 done"]
    assert piped.getvalue() == ""


@pytest.mark.parametrize("progress", [None, False, ProgressTo(bar=False), ProgressTo(bar=None)])
def test_nothing_at_all_when_quiet(piped, progress):
    with Progress(3, desc="work", unit="step", progress=progress) as bar:
        for _ in range(3):
            bar.step("a line nobody asked for")
        assert not bar.lines
    assert piped.getvalue() == ""


def test_bar_false_with_an_echo_writes_lines_even_on_a_terminal(monkeypatch):
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    lines: list[str] = []
    with Progress(2, desc="work", unit="step", progress=ProgressTo(bar=False, echo=lines.append)) as bar:
        bar.step("one")
        bar.step("two")
    assert lines == ["one", "two"] and err.getvalue() == ""


def test_on_a_terminal_a_bar_on_stderr_instead_of_lines(monkeypatch):
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    lines: list[str] = []
    with Progress(2, desc="work", unit="step", progress=lines.append) as bar:
        bar.step("one")
        bar.step("two", at=2)
    assert lines == [] and "work" in err.getvalue() and "2/2" in err.getvalue()


def test_iterate_gives_every_item_and_a_bad_progress_value_is_one_clear_error(piped):
    assert list(iterate([1, 2, 3], desc="items", unit="item")) == [1, 2, 3]
    with pytest.raises(InvalidArgumentError, match="progress must be None .* or a callable"):
        progress_to("yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ fit and convert


def test_fit_writes_one_line_per_epoch_and_trains_the_same(piped, data):
    lines: list[str] = []
    a, b = mlp(data, seed=1), mlp(data, seed=1)
    ra = nw.fit(a, data, epochs=2, batch_size=64, bn_images=64, progress=lines.append)
    rb = nw.fit(b, data, epochs=2, batch_size=64, bn_images=64, progress=False)
    assert [ln.split(":")[1].strip() for ln in lines] == ["epoch 1/2 done", "epoch 2/2 done"]
    assert f"val accuracy {ra.final['val_accuracy']:.4f}" in lines[-1]
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (ra, rb)]
    assert untimed[0] == untimed[1]  # progress changes no number


def test_a_conversion_writes_a_line_per_stage_and_per_fine_tuning_epoch(piped, data, guide):
    lines: list[str] = []
    result = nw.convert(guide, mlp(data, {**MLP, "width_0": 32}), data, progress=lines.append, **FAST)
    quiet = nw.convert(guide, mlp(data, {**MLP, "width_0": 32}), data, progress=False, **FAST)
    n = len(result.stages)
    stages = [ln for ln in lines if ln.startswith("convert: stage ")]
    assert [ln.split(" done")[0] for ln in stages] == [f"convert: stage {i}/{n}" for i in range(1, n + 1)]
    for ln, s in zip(stages, result.stages, strict=True):
        assert f"loss {s.loss_first:.3f} -> {s.loss_last:.3f}" in ln
        assert f"hybrid val accuracy {s.hybrid_accuracy:.4f}" in ln
    assert lines[n:] == [f"convert: fine-tuning epoch 1/1 done: train loss {result.history[0]['train_loss']:.3f}, "
                         f"val accuracy {result.history[0]['val_accuracy']:.4f}"]
    # progress changes no number
    assert all(torch.equal(v, quiet.model.state_dict()[k]) for k, v in result.model.state_dict().items())
    assert piped.getvalue() == ""


# ------------------------------------------------------------------------------ the pipeline's seeding


def test_seeding_writes_a_line_per_epoch_and_records_each_seed_networks_seconds(piped, data, tmp_path):
    spec = nw.ArchSpec.space("mlp", MLP, num_classes=data.num_classes, in_chans=data.in_chans)
    config = RunConfig("mlp", seed_epochs=2, device="cpu")
    lines: list[str] = []
    with nw.LocalPool(tmp_path / "pool") as zoo:
        facts = _seed_pool(zoo, [("seed-mlp", spec, None)], data, config, lines.append, None)
        assert [ln.split(" done")[0] for ln in lines if ln.startswith("seed seed-mlp: epoch ")] == [
            "seed seed-mlp: epoch 1/2", "seed seed-mlp: epoch 2/2"]
        assert isinstance(facts[0]["seconds"], float) and facts[0]["seconds"] > 0
        again = _seed_pool(zoo, [("seed-mlp", spec, None)], data, config, lines.append, None)
        assert again[0]["seconds"] == facts[0]["seconds"]  # the time it took, kept in the entry
        quiet: list[str] = []
        _seed_pool(zoo, [("seed-mlp-2", spec, None)], data, config, quiet.append, False)
        assert any(ln.startswith("seed seed-mlp-2: epoch 2/2 done") for ln in quiet)


# ------------------------------------------------------------------------------ the convert command


@pytest.fixture(scope="module")
def pool(tmp_path_factory, data, guide):
    path = tmp_path_factory.mktemp("progress") / "pool"
    with nw.LocalPool(path) as zoo:
        zoo.add("guide", guide, spec=nw.ArchSpec.space("mlp", MLP, num_classes=10, in_chans=1), dataset="digits",
                metrics={"accuracy": nw.evaluate(guide, data)["accuracy"]})
    return path


def test_convert_command_prints_stage_lines_when_piped_and_only_json_with_json(pool, capsys):
    flags = ["--steps-per-stage", "3", "--finetune-epochs", "1", "--batch-size", "64"]
    rc, out, err = cli(["convert", "--guide", "pool:guide", "--target", TARGET, "--pool", str(pool), *flags], capsys)
    assert rc == 0, err
    stage_lines = [ln for ln in out.splitlines() if ln.startswith("convert: stage ")]
    assert stage_lines and "convert: fine-tuning epoch 1/1 done" in out
    assert out.index("guide part ends at") < out.index(stage_lines[0]) < out.index("hybrid acc %")  # plan, lines, table
    rc, out, err = cli(["convert", "--guide", "pool:guide", "--target", TARGET, "--pool", str(pool), "--json",
                        *flags], capsys)
    assert rc == 0, err
    assert json.loads(out)["entry"] == "guide-to-mlp-2"  # stdout is the JSON and nothing else
    assert "convert: " not in err and "%|" not in err  # no lines and no bar on stderr either
