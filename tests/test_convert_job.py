"""``run_convert_job(ConvertJob(...))``: what ``nas-warmstart convert`` does, from Python.

One tiny MLP guide trained on ``digits`` is put in a pool, the pool copied, and the same
conversion (a few steps per stage) run twice: through the command in this process, and
through the library on the copy. Same entry, same metrics, same record, same lines.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart import InvalidArgumentError
from nas_warmstart.convert import ConvertInterrupted, ConvertJob, ConvertJobResult, run_convert_job
from nas_warmstart.data import load_dataset

from .test_cli_convert import one_error_line
from .test_cli_convert import run as cli

pytestmark = pytest.mark.usefixtures("one_thread")

GUIDE = {"resolution": 8, "num_layers": 2, "width_0": 64, "width_1": 32, "act": "relu", "norm": False}
TARGET = "space:mlp:" + json.dumps({**GUIDE, "width_0": 32})
SETTINGS = dict(steps_per_stage=3, finetune_epochs=1, batch_size=64, schedule="sequential")
FLAGS = ["--steps-per-stage", "3", "--finetune-epochs", "1", "--batch-size", "64", "--schedule", "sequential"]
#: what differs between two equal conversions: wall times and latencies
TIMED = {"seconds", "latency", "guide_ms", "target_ms"}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """Two copies of a pool holding one trained guide, ``guide`` (an MLP of the mlp space)."""
    root = tmp_path_factory.mktemp("convert-job")
    data = load_dataset("digits")
    spec = nw.ArchSpec.space("mlp", GUIDE, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(0)
    guide = spec.build()
    nw.fit(guide, data, epochs=1, batch_size=64, progress=False)
    with nw.LocalPool(root / "a") as zoo:
        zoo.add("guide", guide, spec=spec, dataset="digits", metrics={"accuracy": nw.evaluate(guide, data)["accuracy"]})
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"


def _untimed(value):
    """``value`` without the keys that hold wall times or latencies."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMED}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _plain(text: str, pool_dir) -> str:
    text = text.replace(str(pool_dir), "POOL")
    return re.sub(r"latency [\d.]+ ms", "latency T ms", text)


def test_the_job_from_python_is_the_command(pools, tmp_path, capsys):
    a, b = pools
    rc, out, err = cli(["convert", "--guide", "pool:guide", "--target", TARGET, "--pool", str(a),
                        "--out", str(tmp_path / "out-a"), *FLAGS], capsys)
    assert rc == 0, err
    lines: list[str] = []
    result = run_convert_job(ConvertJob(guide="pool:guide", target=TARGET, pool=str(b), out=str(tmp_path / "out-b"),
                                        **SETTINGS), echo=lines.append)
    assert isinstance(result, ConvertJobResult) and not result.already_registered
    assert result.entry == "guide-to-mlp" and result.conversion is not None

    # the same lines (the plan, the stage table, the entry, the files), printed or echoed
    printed = "".join(line + "\n" for line in lines)
    assert _plain(printed, b).replace("out-b", "out") == _plain(out, a).replace("out-a", "out")
    # the same entry in each pool, with the same metrics and provenance
    with nw.LocalPool(a, create=False) as za, nw.LocalPool(b, create=False) as zb:
        ea, eb = za.get("guide-to-mlp"), zb.get(result.entry)
        assert all(torch.equal(za.load_state_dict(ea.name)[k], v) for k, v in zb.load_state_dict(eb.name).items())
    assert (eb.parent, eb.dataset, eb.spec) == (ea.parent, ea.dataset, ea.spec)
    assert (eb.parent, eb.dataset) == ("guide", "digits")
    assert _untimed(eb.metrics) == _untimed(ea.metrics) and eb.metrics["accuracy"] == result.record["accuracy"]
    assert eb.provenance == ea.provenance
    # the same record, written to --out and returned
    record_a = json.loads((tmp_path / "out-a" / "conversion.json").read_text())
    record_b = json.loads((tmp_path / "out-b" / "conversion.json").read_text())
    assert record_b == json.loads(json.dumps(result.record))
    assert _untimed({**record_b, "pool": None}) == _untimed({**record_a, "pool": None})
    assert [p.name for p in result.out] == ["model.safetensors", "spec.json", "conversion.json"]


def test_the_same_job_again_reports_the_entry_it_registered(pools, tmp_path, capsys):
    _, b = pools
    job = ConvertJob(guide="pool:guide", target=TARGET, pool=str(b), checkpoint_dir=str(tmp_path / "ckpt"),
                     name="resumable", **SETTINGS)
    first = run_convert_job(job, echo=lambda _: None)
    again = run_convert_job(job, echo=lambda _: None)
    assert again.already_registered and again.conversion is None and again.entry == first.entry == "resumable"
    assert again.record == {**first.record, "entry": "resumable", "pool": str(b)}
    # what `convert --json` prints for the same folder
    rc, out, err = cli(["convert", "--guide", "pool:guide", "--target", TARGET, "--pool", str(b), "--checkpoint-dir",
                        str(tmp_path / "ckpt"), "--name", "resumable", "--json", *FLAGS], capsys)
    assert rc == 0, err
    assert json.loads(out) == json.loads(json.dumps(again.to_dict())) and again.to_dict()["already_registered"]


def test_bad_settings_fail_before_anything_is_trained(pools, capsys):
    _, b = pools
    with pytest.raises(InvalidArgumentError, match=r"^--batch-size must be >= 2, got 1$"):
        ConvertJob(guide="pool:guide", target=TARGET, pool=str(b), batch_size=1)
    with pytest.raises(InvalidArgumentError, match="unknown schedule"):
        run_convert_job(ConvertJob(guide="pool:guide", target=TARGET, pool=str(b), schedule="fast"))
    # the same message as the command's
    job = ConvertJob(guide="pool:guide", target="pool:guide", pool=str(b))
    with pytest.raises(InvalidArgumentError) as e:
        run_convert_job(job)
    rc, _, err = cli(["convert", "--guide", "pool:guide", "--target", "pool:guide", "--pool", str(b)], capsys)
    assert rc == 2 and one_error_line(err) == f"nas-warmstart: error: {e.value}"


def test_ctrl_c_while_converting_is_convert_interrupted(pools, tmp_path):
    _, b = pools

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    with nw.LocalPool(b, create=False) as zoo:
        before = zoo.names()
    job = ConvertJob(guide="pool:guide", target=TARGET, pool=str(b), **SETTINGS)
    with pytest.raises(ConvertInterrupted):
        run_convert_job(job, echo=lambda _: None, show_plan=False,
                        converter=lambda guide, target, data, settings: interrupted())
    with nw.LocalPool(b, create=False) as zoo:
        assert zoo.names() == before
