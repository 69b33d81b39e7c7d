"""convert_distributed on a real local Ray cluster (Ray Train V2, gloo on CPU), marked ``ray``.

The worker code itself is checked against one process in tests/test_dist.py (plain gloo
groups, exact where the arithmetic is); here: the Ray Train wiring (workers, reports,
checkpoints in Ray's storage, Ray's restore after a killed driver) and the errors that must
come before any worker starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart.data import load_dataset

from ._dist_workers import convert_worker
from ._ray_convert_driver import run
from .test_convert import tiny_convnet, tiny_resnet

pytestmark = pytest.mark.ray
pytest.importorskip("ray", reason='Ray tests need the ray extra: pip install -e ".[ray]"')
from nas_warmstart.integrations.ray import convert_distributed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# long enough stages that a kill lands mid-run; short enough for CI (~1 s a stage)
KW = {"steps_per_stage": 12, "finetune_epochs": 2, "batch_size": 32, "bn_images": 64, "seed": 3}


@pytest.fixture(scope="module")
def guide_file(tmp_path_factory):
    from safetensors.torch import save_file

    g = tiny_resnet(0)
    nw.fit(g, load_dataset("synthetic"), epochs=3, batch_size=32, progress=False, bn_images=64)
    path = tmp_path_factory.mktemp("guide") / "guide.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def uninterrupted(guide_file, tmp_path_factory):
    """The same 2-worker conversion on a plain gloo group (tests/_dist_workers.py), uninterrupted."""
    from ._dist_workers import spawn
    from .test_dist import _load

    d = tmp_path_factory.mktemp("gloo-reference")
    spawn(convert_worker, 2, {"guide": _guide(guide_file), "target": tiny_convnet(1), "data": load_dataset("synthetic"),
                              "kwargs": dict(KW, progress=False), "mode": "data", "out": str(d)})
    return _load(d)


def _guide(guide_file):
    from safetensors.torch import load_file

    g = tiny_resnet(0)
    g.load_state_dict(load_file(str(guide_file)))
    return g


def _latest(storage: Path) -> dict:
    snap = storage / "killed" / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snap.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, json.JSONDecodeError):
        return {}


def test_killed_driver_resumes_at_its_stage_with_the_uninterrupted_result(ray_cluster, uninterrupted, guide_file,
                                                                          tmp_path):
    import ray

    storage, log = tmp_path / "storage", tmp_path / "stages.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen([sys.executable, "-m", "tests._ray_convert_driver", ray_cluster["cluster"].address,
                             str(storage), "killed", str(guide_file), str(log), json.dumps(KW)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 240
        while _latest(storage).get("metrics", {}).get("stages_done", 0) < 2:
            assert proc.poll() is None, "the driver ended before stage 2"
            assert time.monotonic() < deadline, "no checkpoint of stage 2 within 240 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    latest = _latest(storage)["metrics"]
    assert latest["stages_done"] < 3 or latest["finetune_epochs_done"] < KW["finetune_epochs"], "killed too late"
    done_before = latest["stages_done"] + latest["finetune_epochs_done"]
    # the killed driver's job ends and Ray frees its workers' CPUs
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, "the killed run's workers still hold the CPUs after 60 s"
        time.sleep(0.2)
    before = len(log.read_text().splitlines())
    res = run(None, str(storage), "killed", str(guide_file), str(log), KW)
    resumed = [json.loads(line)["index"] for line in log.read_text().splitlines()[before:]]
    # started after the last checkpoint; the callback ran on the first worker, once per stage and epoch
    assert resumed == list(range(done_before + 1, 1 + len(res.stages) + KW["finetune_epochs"])), (done_before, resumed)
    # Ray's workers run the package's worker code: bit-equal to the uninterrupted plain gloo run
    ref_sd, ref = uninterrupted
    assert [s.to_dict() | {"seconds": 0} for s in res.stages] == [s | {"seconds": 0} for s in ref["stages"]]
    for k, v in ref_sd.items():
        assert torch.equal(res.model.state_dict()[k], v), k
    assert res.accuracy == ref["accuracy"]
    assert res.status == "ok" and res.settings["workers"] == 2 and res.settings["mode"] == "data"
    assert len(res.history) == KW["finetune_epochs"]
    # the returned model is the one scored: evaluating it again gives the reported accuracy
    assert nw.evaluate(res.model, load_dataset("synthetic"), split="test")["accuracy"] == res.accuracy
    # against one process with the same seed: not bit-equal (BatchNorm normalises by each worker's
    # half batch while training), the same within the noise of 32 test images
    one = nw.convert(_guide(guide_file), tiny_convnet(1), load_dataset("synthetic"), progress=False, **KW)
    assert [(s.kind, s.part) for s in res.stages] == [(s.kind, s.part) for s in one.stages]
    assert res.stages[0].loss_first == pytest.approx(one.stages[0].loss_first, rel=0.05)
    assert abs(res.accuracy - one.accuracy) <= 0.1
    assert res.guide_accuracy == one.guide_accuracy
    assert res.params == one.params and res.plan.pairs == one.plan.pairs


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"num_workers": 3}, "num_workers=3 with 1 CPU each needs 3 CPUs; the cluster has 2: give at most 2 workers"),
    ({"num_workers": 1, "use_gpu": True}, "use_gpu=True needs one GPU per worker"),
    ({"num_workers": 2, "mode": "parts", "schedule": "progressive"}, "needs schedule='independent'"),
    ({"num_workers": 2, "mode": "parts", "plan": [("layer1", "stages.1")]}, "too few for 2 workers in part-parallel mode"),
    ({"num_workers": 2, "mode": "pipes"}, "mode"),
    ({"num_workers": 2, "checkpoint_dir": "x"}, "use storage_path"),
    ({"num_workers": 2, "device": "cpu"}, "use use_gpu"),
    ({"num_workers": 2, "epochs": 3}, "convert has no argument 'epochs'"),
    ({"num_workers": 2, "schedule": "zigzag"}, "unknown schedule"),
    ({"num_workers": 2, "batch_size": 3}, "batch_size 3 is too small for 2 workers"),
])
def test_bad_input_is_refused_before_any_worker_starts(ray_cluster, guide_file, tmp_path, kwargs, needle):
    before = set(tmp_path.iterdir())
    t0 = time.monotonic()
    with pytest.raises(nw.NasWarmstartError) as e:
        convert_distributed(_guide(guide_file), tiny_convnet(1), load_dataset("synthetic"),
                                                storage_path=tmp_path / "s", **kwargs)
    assert needle in str(e.value), str(e.value)
    assert set(tmp_path.iterdir()) == before  # no run was started: nothing written
    assert time.monotonic() - t0 < 10


def test_cli_part_parallel_conversion_on_two_workers_registers_the_result(ray_cluster, tmp_path, capsys):
    """``--workers 2 --mode parts``: the independent stage equals the one-process stage; the result is
    registered in the pool with the guide as its parent and re-scores to the reported accuracy."""
    from nas_warmstart.cli.app import main

    from .test_cli_convert import FAST, GUIDE_CONFIG, SPACE_TARGET

    data = load_dataset("synthetic")
    spec = nw.ArchSpec.space("convnet", GUIDE_CONFIG, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(0)
    guide = spec.build()
    nw.fit(guide, data, epochs=2, batch_size=32, progress=False, bn_images=64)
    with nw.LocalPool(tmp_path / "pool") as zoo:
        zoo.add("guide", guide, spec=spec, dataset="synthetic")
    argv = ["convert", "--guide", "pool:guide", "--target", SPACE_TARGET, "--pool", str(tmp_path / "pool"), *FAST,
            "--workers", "2", "--mode", "parts", "--checkpoint-dir", str(tmp_path / "runs"), "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["workers"] == 2 and record["settings"]["mode"] == "parts"
    assert record["settings"]["schedule"] == "independent"  # the default of --mode parts
    stages = record["stages"]
    assert [s["kind"] for s in stages] == ["independent"] + ["repair"] * (len(stages) - 1)
    with nw.LocalPool(tmp_path / "pool") as zoo:
        assert zoo.get(record["entry"]).parent == "guide"
        model = zoo.load(record["entry"])
        stored_guide = zoo.load("guide")
    assert nw.evaluate(model, data, split="test")["accuracy"] == pytest.approx(record["accuracy"])
    assert any(p.name.startswith("convert-") for p in (tmp_path / "runs").iterdir())  # Ray's run folder
    # the same conversion in one process: the part-parallel stage is the one-process stage
    target_spec = nw.ArchSpec.parse(SPACE_TARGET, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(0)
    one = nw.convert(stored_guide, target_spec.build(), data, schedule="independent", steps_per_stage=3,
                     finetune_epochs=1, batch_size=32, progress=False)
    assert stages[0]["loss_first"] == pytest.approx(one.stages[0].loss_first, rel=1e-5)
    assert stages[0]["loss_last"] == pytest.approx(one.stages[0].loss_last, rel=1e-4)  # float sums in another order
    assert abs(record["accuracy"] - one.accuracy) <= 0.1  # BatchNorm over half batches in the later stages
