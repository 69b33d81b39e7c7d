"""``nas-warmstart convert``: a pool entry converted into another architecture, in-process.

A tiny ConvNet guide trained on the ``synthetic`` data set (1×16×16 images, 4 classes) is
converted with a few steps per stage; seconds per conversion.
"""

from __future__ import annotations

import json
import re
import shlex
import sys

import pytest
import torch
from safetensors.torch import load_file

import nas_warmstart as nw
from nas_warmstart.cli.app import main
from nas_warmstart.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

GUIDE_CONFIG = {"num_stages": 2, "depth_0": 1, "width_0": 16, "kernel_0": 3, "depth_1": 1, "width_1": 16,
                "kernel_1": 3, "skip": False}
TARGET_CONFIG = {"num_stages": 2, "depth_0": 1, "width_0": 8, "kernel_0": 3, "depth_1": 1, "width_1": 16,
                 "kernel_1": 5, "skip": False}
SPACE_TARGET = "space:convnet:" + json.dumps(TARGET_CONFIG)
TIMM_TARGET = 'timm:resnet18:{"layers":[1,1,1,1],"channels":[8,16,16,16]}'
FAST = ["--steps-per-stage", "3", "--finetune-epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def pool(tmp_path_factory, data):
    """A pool holding one trained guide, ``guide`` (a ConvNet of the convnet space)."""
    d = tmp_path_factory.mktemp("convert") / "pool"
    spec = nw.ArchSpec.space("convnet", GUIDE_CONFIG, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(0)
    guide = spec.build()
    nw.fit(guide, data, epochs=2, batch_size=32, progress=False, bn_images=64)
    with nw.LocalPool(d) as zoo:
        zoo.add("guide", guide, spec=spec, dataset="synthetic",
                metrics={"accuracy": nw.evaluate(guide, data)["accuracy"]})
    return d


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def names(pool_dir) -> list[str]:
    with nw.LocalPool(pool_dir, create=False) as zoo:
        return zoo.names()


def test_convert_to_a_space_target_registers_the_result_and_writes_out(pool, data, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, out, err = run(["convert", "--guide", "pool:guide", "--target", SPACE_TARGET, "--pool", str(pool),
                        "--dataset", "synthetic", "--schedule", "sequential", "--out", str(out_dir), *FAST], capsys)
    assert rc == 0, err
    # the plan first (before training), then the stage table, then the new entry
    plan_at, stages_at = out.index("guide part ends at"), out.index("hybrid acc %")
    registered = re.search(r"^registered (\S+) in the pool .* \(parent guide, test accuracy ([0-9.]+)%\)$", out, re.M)
    assert registered is not None and plan_at < stages_at < registered.start(), out
    assert out.count("(output)") >= 2 and "retention" in out and "sequential" in out
    name, printed_pct = registered.group(1), registered.group(2)
    assert name == "guide-to-convnet"
    assert f"target: test acc {printed_pct}%" in out

    with nw.LocalPool(pool, create=False) as zoo:
        entry = zoo.get(name)
        state = zoo.load_state_dict(name)
    assert entry.parent == "guide" and entry.dataset == "synthetic"
    assert entry.provenance["schedule"] == "sequential" and entry.provenance["distance"] == "cka"
    assert entry.provenance["steps_per_stage"] == 3 and entry.provenance["warm_start"] is True
    assert entry.spec == nw.ArchSpec.space("convnet", TARGET_CONFIG, num_classes=4, in_chans=1)
    m = entry.metrics
    assert set(m) >= {"accuracy", "test_accuracy", "guide_accuracy", "retention", "params", "latency"}
    assert m["retention"] == pytest.approx(m["accuracy"] / m["guide_accuracy"])
    assert m["latency"] > 0 and m["epochs"] == 1
    # the stored weights, in a freshly built target, give the printed test accuracy
    fresh = entry.spec.build()
    assert m["params"] == sum(p.numel() for p in fresh.parameters())
    fresh.load_state_dict(state, strict=True)
    acc = nw.evaluate(fresh, data, split="test")["accuracy"]
    assert acc == m["accuracy"] == m["test_accuracy"]
    assert f"{100 * acc:.2f}" == printed_pct

    # --out: the same weights, the spec, the record
    weights = load_file(str(out_dir / "model.safetensors"))
    assert set(weights) == set(fresh.state_dict()) and all(torch.equal(weights[k], state[k]) for k in state)
    assert nw.ArchSpec.from_dict(json.loads((out_dir / "spec.json").read_text())) == entry.spec
    record = json.loads((out_dir / "conversion.json").read_text())
    assert record["entry"] == name and record["guide"]["entry"] == "guide" and record["dataset"] == "synthetic"
    assert record["settings"] == entry.provenance
    assert record["accuracy"] == acc and record["retention"] == pytest.approx(m["retention"])
    assert [s["kind"] for s in record["stages"]] == ["sequential"] * len(record["plan"]["stages"])
    assert all(f"wrote {out_dir / f}" in out for f in ("model.safetensors", "spec.json", "conversion.json"))


def test_convert_to_a_timm_target_as_json(pool, data, capsys):
    rc, out, err = run(["convert", "--guide", "zoo:guide", "--target", TIMM_TARGET, "--pool", str(pool),
                        "--no-warm-start", "--kd", "0", "--name", "as-resnet", "--json", *FAST], capsys)
    assert rc == 0, err
    result = json.loads(out)  # only JSON on stdout: no plan, no table
    assert result["entry"] == "as-resnet" and result["out"] == []
    assert result["target"]["spec"] == {"kind": "timm", "name": "resnet18", "num_classes": 4, "in_chans": 1,
                                        "config": {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16]}}
    assert result["dataset"] == "synthetic"  # the guide entry's, as no --dataset was given
    assert result["stages"] and result["stages"][-1]["target"] == ""
    with nw.LocalPool(pool, create=False) as zoo:
        entry = zoo.get("as-resnet")
        model = zoo.load("as-resnet")
    assert entry.parent == "guide" and entry.provenance["warm_start"] is False
    assert entry.provenance["kd"] == [0.0, 4.0] and entry.provenance["schedule"] == "progressive"
    assert nw.evaluate(model, data, split="test")["accuracy"] == result["accuracy"] == entry.metrics["accuracy"]


def test_the_same_command_with_a_checkpoint_dir_resumes(pool, tmp_path, capsys):
    argv = ["convert", "--guide", "pool:guide", "--target", SPACE_TARGET, "--pool", str(pool),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--name", "resumed", "--json", *FAST]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    first = json.loads(out)
    assert (tmp_path / "ckpt" / "state.json").is_file()
    argv[argv.index("resumed")] = "resumed-again"
    rc, out, err = run(argv, capsys)  # every stage and epoch is done: nothing is trained again
    assert rc == 0, err
    again = json.loads(out)
    assert again["stages"] == first["stages"] and again["accuracy"] == first["accuracy"]
    with nw.LocalPool(pool, create=False) as zoo:
        a, b = zoo.load_state_dict("resumed"), zoo.load_state_dict("resumed-again")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another config of the same target class (convert()'s settings would match): refused
    other = "space:convnet:" + json.dumps({**TARGET_CONFIG, "width_0": 16})
    argv[argv.index(SPACE_TARGET)] = other
    argv[argv.index("resumed-again")] = "resumed-other"
    rc, out, err = run(argv, capsys)
    assert rc == 2 and "holds the conversion of another target" in one_error_line(err) and not out


@pytest.mark.parametrize("checkpoint", [False, True])
def test_ctrl_c_is_one_line_exit_130(pool, tmp_path, capsys, monkeypatch, checkpoint):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    # the subpackage (the attribute nas_warmstart.convert is the function)
    monkeypatch.setattr(sys.modules["nas_warmstart.convert"], "convert", interrupted)
    argv = ["convert", "--guide", "pool:guide", "--target", SPACE_TARGET, "--pool", str(pool), *FAST]
    if checkpoint:
        argv += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    before = names(pool)
    rc, _, err = run(argv, capsys)
    assert rc == 130
    line = one_error_line(err)
    if checkpoint:
        assert line == "nas-warmstart: interrupted; continue the conversion with: nas-warmstart " + shlex.join(argv)
    else:
        assert line.startswith("nas-warmstart: interrupted;") and "--checkpoint-dir DIR" in line
    assert names(pool) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--pool", "{missing}"), "no pool at"),
        (("--guide", "pool:guid"), "has no entry 'guid'; did you mean 'guide'?"),
        (("--guide", "timm:resnet18"), "--guide takes a trained network of the pool"),
        (("--target", "space:nope:{}"), "unknown search space 'nope'"),
        (("--target", "resnet18"), "is not understood"),
        (("--target", "pool:guide"), "--target takes an architecture"),
        (("--target", 'space:convnet:{"num_stages": 2'), "does not parse"),
        (("--schedule", "fast"), "invalid choice: 'fast'"),
        (("--dataset", "nope"), "unknown data set 'nope'"),
        (("--dataset", "digits"), "the guide 'guide' predicts 4 classes"),
        (("--distance", "ckaa"), "unknown distance 'ckaa'"),
        (("--batch-size", "1"), "--batch-size must be >= 2, got 1"),
        (("--name", "guide"), "already has an entry 'guide'"),
        (("--out", "{missing}/out"), "does not exist"),
        (("--pool", None), "the following arguments are required: --pool"),
        # on a Ray cluster: refused before Ray starts
        (("--mode", "parts"), "--mode needs --workers N"),
        (("--address", "auto"), "--address needs --workers N"),
        (("--workers", "0"), "--workers must be >= 1, got 0"),
        (("--workers", "2", "--device", "cpu"), "each worker gets its own device"),
        (("--workers", "2", "--mode", "parts", "--schedule", "progressive"), "it needs --schedule independent"),
        (("--workers", "2", "--address", "nohost"), "is not auto or HOST:PORT"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(pool, tmp_path, capsys, args, needle):
    given = dict(zip(args[::2], args[1::2], strict=True))
    opts = {"--guide": "pool:guide", "--target": SPACE_TARGET, "--pool": str(pool), **given}
    argv = ["convert", *FAST]
    for flag, value in opts.items():
        if value is not None:
            argv += [flag, value.replace("{missing}", str(tmp_path / "missing"))]
    before = names(pool)
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert needle in one_error_line(err)
    assert "hybrid acc" not in out  # nothing was trained
    assert names(pool) == before and not (tmp_path / "missing").exists()

