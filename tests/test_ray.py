"""Ray Tune integration on a real two-node Ray cluster (the ``ray_cluster`` fixture).

Every trial runs on the worker node; the :class:`RayPool` actor runs on the head. So these
tests are also the "no shared pool directory" tests: trials reach the pool only through the
actor (checked from the actor's own record of who called it, and from what the trainable is
told).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart.data import load_dataset

ray = pytest.importorskip("ray", reason='Ray tests need the ray extra: pip install -e ".[ray]"')
import ray.cloudpickle as cloudpickle  # noqa: E402
from ray import tune  # noqa: E402

from nas_warmstart.integrations.ray import (  # noqa: E402
    RayPool,
    RegisterCheckpoints,
    make_trainable,
    save_checkpoint,
)

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_pool(ray_cluster, tmp_path, request):
    path = tmp_path / "pool"
    pool = RayPool(path, name=request.node.name.replace("[", "-").replace("]", ""))
    yield pool, path
    pool.shutdown()


def _evaluate_entry(pool, name, data):
    model = pool.load(name)
    return nw.evaluate(model, data, split="val")["accuracy"]


def test_warm_started_tune_search_on_two_nodes(ray_cluster, ray_pool, tmp_path):
    """OptunaSearch + ASHA over the mlp space on digits, 2 trials at a time on the worker node."""
    pool, path = ray_pool
    # Built by hand as a user would: OptunaSearch over the space's own define-by-run function
    # (space.suggest), ASHA, resources per trial (pinned to the worker node), 2 at a time.
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import get_space

    space = get_space("mlp")
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(space, "digits", pool, epochs=2, seed=3), {"cpu": 1, "worker_node": 0.5}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=space.suggest, metric="accuracy", mode="max", seed=3),
            scheduler=ASHAScheduler(metric="accuracy", mode="max", max_t=2, grace_period=1, reduction_factor=2),
            num_samples=6, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="two-nodes", storage_path=str(tmp_path / "results"), verbose=0),
    )
    # the trainable the trials unpickle knows the actor's name, never the pool directory
    blob = cloudpickle.dumps(make_trainable("mlp", "digits", pool, epochs=2))
    assert str(path).encode() not in blob and b"pool" in blob

    results = tuner.fit()
    assert results.num_errors == 0
    trials = [r.metrics for r in results]
    finished = [m for m in trials if m.get("finished")]
    stopped = [m for m in trials if not m.get("finished")]
    assert len(finished) >= 2 and len(trials) == 6

    # every finished trial is in the pool exactly once; ASHA-stopped ones registered nothing
    entries = {e.name: e for e in pool}
    assert sorted(entries) == sorted(m["pool_entry"] for m in finished)
    assert all(m.get("pool_entry") is None for m in stopped)

    # provenance: later trials started from earlier trials' entries, and the pool says so
    warm = [m for m in finished if m["warm_started"]]
    assert warm, "no trial was warm-started"
    data = load_dataset("digits")
    for m in finished:
        e = entries[m["pool_entry"]]
        assert e.parent == m["warm_start_source"]
        assert e.provenance["trial_id"] == m["trial_id"] and e.provenance.get("similarity") == m["warm_start_similarity"]
        assert e.spec == nw.ArchSpec.from_dict(json.loads(m["spec"]))
        if e.parent is not None:
            assert e.parent in entries or e.parent in {x.get("pool_entry") for x in trials}
            assert entries[e.parent].created <= e.created
        # a second way to the reported number: the stored network scores it again
        assert e.metrics["accuracy"] == m["accuracy"]
        assert math.isclose(_evaluate_entry(pool, e.name, data), m["accuracy"], abs_tol=1e-9)
    assert pool.check(full=True) == {k: [] for k in ("missing", "damaged", "nonfinite", "malformed", "unindexed", "orphans", "partial")}

    # who touched the pool: the actor on the head node; trials on the worker node called it
    info = pool.info()
    head = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("node:__internal_head__"))
    assert info["node_id"] == head != ray_cluster["worker_node_id"]
    calls = pool.activity()
    by_trials = [c for c in calls if c["pid"] != os.getpid()]
    assert {c["node_id"] for c in by_trials} == {ray_cluster["worker_node_id"]}
    methods = {c["method"] for c in by_trials}
    assert {"rank", "fetch", "store"} <= methods
    assert sum(c["calls"] for c in by_trials if c["method"] == "store") == len(finished)


def test_a_trial_that_raises_resumes_from_its_checkpoint_and_registers_once(ray_cluster, ray_pool, tmp_path):
    import tests._ray_spaces as crash_space

    pool, _ = ray_pool
    data = load_dataset("digits")
    assert math.ceil(len(data.train) / 32) == crash_space.STEPS_PER_EPOCH
    trainable = make_trainable(crash_space.space, "digits", pool, epochs=3, batch_size=32)
    from ray.tune.schedulers import HyperBandScheduler

    tuner = tune.Tuner(  # HyperBand with one trial never stops it; results under a file:// URI
        trainable, param_space={"crash": True, "width": 8},
        tune_config=tune.TuneConfig(scheduler=HyperBandScheduler(metric="accuracy", mode="max", max_t=3)),
        run_config=tune.RunConfig(name="crash", storage_path=f"file://{tmp_path}/results", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    results = tuner.fit()
    assert (ray_cluster["crash_dir"] / "crashed-w8").exists()  # it did crash, in epoch 2
    assert results.num_errors == 0
    m = results[0].metrics
    assert m["finished"] and m["training_iteration"] == 3
    assert m["iterations_since_restore"] == 2  # resumed after epoch 1: epochs 2 and 3 only
    assert pool.names() == [m["pool_entry"]]
    assert (tmp_path / "results" / "crash").is_dir()
    assert sum(c["calls"] for c in pool.activity() if c["method"] == "store") == 1
    # the restored run's weights are the ones reported: the stored network scores the same
    assert math.isclose(_evaluate_entry(pool, m["pool_entry"], data), m["accuracy"], abs_tol=1e-9)


def test_register_checkpoints_callback_for_your_own_trainable(ray_cluster, ray_pool, tmp_path):
    """A user's trainable warm-starts through the pool and saves checkpoints; the driver's
    callback registers finished trials (not the one that stopped early)."""
    pool, _ = ray_pool
    spec_of = {w: nw.ArchSpec.space("mlp", {"resolution": 8, "num_layers": 1, "width_0": w, "act": "relu",
                                            "norm": False}, num_classes=10, in_chans=1) for w in (32, 64)}

    def my_trainable(config):
        data = load_dataset("digits")
        spec = spec_of[config["width"]]
        model = spec.build()
        ws = nw.warm_start(model, RayPool.connect(pool.name), warn_weak=False)
        epochs = 1 if config["width"] == 32 else 2
        for epoch in range(1, epochs + 1):
            res = nw.fit(model, data, epochs=1, batch_size=64, seed=epoch, progress=False)
            d = save_checkpoint(model, tmp_path / f"ck-{config['width']}-{epoch}", spec=spec,
                                provenance=ws.provenance() if ws else {"source": None})
            tune.report({"accuracy": res.final["val_accuracy"], "finished": epoch == 2},
                        checkpoint=tune.Checkpoint.from_directory(d))

    callback = RegisterCheckpoints(pool, dataset="digits")
    everything = nw.LocalPool(tmp_path / "all")  # a LocalPool the driver writes directly
    keep_all = RegisterCheckpoints(everything, dataset="digits", include_stopped=True)
    tune.Tuner(
        my_trainable, param_space={"width": tune.grid_search([64, 32])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="own", storage_path=str(tmp_path / "results"), verbose=0,
                                  callbacks=[callback, keep_all]),
    ).fit()
    assert len(everything) == 2 and everything.names() == sorted(keep_all.registered.values())
    assert list(callback.registered.values()) == pool.names() and len(pool) == 1  # width 32 stopped at 1 of 2
    entry = pool.get(pool.names()[0])
    assert entry.spec == spec_of[64] and entry.dataset == "digits" and entry.parent is None
    assert 0.5 < entry.metrics["accuracy"] <= 1.0


def test_ray_pool_refuses_a_second_directory_under_the_same_name(ray_pool, tmp_path):
    pool, path = ray_pool
    with pytest.raises(nw.InvalidArgumentError, match="already runs on"):
        RayPool(tmp_path / "other", name=pool.name)
    assert RayPool.connect(pool.name).info()["path"] == str(path)
    with pytest.raises(nw.InvalidArgumentError, match="no RayPool called 'nope'"):
        RayPool.connect("nope")
    with pytest.raises(nw.InvalidArgumentError, match="node must be"):
        RayPool(tmp_path / "x", name="x", node="no-such-node")
    (tmp_path / "a-file").write_text("not a pool")
    with pytest.raises(nw.InvalidArgumentError, match="exists and is not a directory"):
        RayPool(tmp_path / "a-file", name="file")
    with pytest.raises(nw.InvalidArgumentError, match="no RayPool called 'file'"):  # nothing left running
        RayPool.connect("file")
    torch.manual_seed(0)


# ------------------------------------------------------------------------------ the command

CMD = [sys.executable, "-m", "nas_warmstart"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("nope", "--backend", "ray"), "unknown search space 'nope'"),
        (("mlp", "--backend", "ray", "--address", "127.0.0.1:9"), "no Ray head answers there"),
        (("mlp", "--backend", "ray", "--address", "headnode"), "is not auto or HOST:PORT"),
        (("mlp", "--backend", "ray", "--gpus-per-trial", "64"), "--gpus-per-trial 64: this machine has"),
        (("mlp", "--backend", "ray", "--cpus-per-trial", "-1"), "must be a number >= 0"),
        (("mlp", "--backend", "ray", "--cpus-per-trial", "4096"), "--cpus-per-trial 4096: this machine has"),
        (("mlp", "--backend", "ray", "--n-jobs", "2"), "use --max-concurrent K"),
        (("mlp", "--backend", "ray", "--max-concurrent", "0"), "--max-concurrent must be >= 1"),
        (("mlp", "--backend", "ray", "--dataset", "nope"), "unknown data set 'nope'"),
        (("mlp", "--backend", "ray", "--storage-path", "bogus://x/y"), "Tune cannot write to bogus:// URIs"),
        (("mlp", "--backend", "ray", "--storage-path", "/proc/version"), "is a file; give a directory"),
        (("mlp", "--address", "auto"), "--address is for --backend ray"),
        (("mlp", "--resume", "--max-concurrent", "2"), "--max-concurrent, --resume are for --backend ray"),
    ],
)
def test_search_ray_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    from nas_warmstart.cli.app import main

    argv = ["search", *args, "--trials", "1", "--epochs", "1", "--pool", str(tmp_path / "pool")]
    if "--backend" in args and "--storage-path" not in args:
        argv += ["--storage-path", str(tmp_path / "results")]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], err
    assert list(tmp_path.iterdir()) == []  # no pool, no results


def test_search_ray_without_ray_installed_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from nas_warmstart.cli import main; "
            f"sys.exit(main(['search', 'mlp', '--backend', 'ray', '--pool', {str(tmp_path / 'pool')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "nas-warmstart[ray]"' in lines[0] and "--backend ray" in lines[0]
    assert list(tmp_path.iterdir()) == []


def _pool_size(path) -> int:
    if not (path / "index.sqlite").exists():
        return 0
    try:
        return len(nw.LocalPool(path, create=False))
    except nw.PoolError:
        return 0


def test_search_ray_driver_killed_then_resume_finishes_with_no_duplicate_or_lost_entry(tmp_path):
    """SIGKILL the driver once the first trial registered; `--resume` finishes the experiment."""
    pool = tmp_path / "pool"
    argv = [*CMD, "search", "mlp", "--backend", "ray", "--trials", "6", "--epochs", "2", "--pool", str(pool),
            "--storage-path", str(tmp_path / "results"), "--seed", "5", "--json"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _pool_size(pool) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGKILL)  # the driver only: Ray's own reaper stops its cluster
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):  # agents the reaper may leave behind
            os.killpg(first.pid, signal.SIGKILL)
    assert out == ""  # killed before its summary
    before = nw.LocalPool(pool, create=False).names()
    assert before

    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout.strip().splitlines()[-1])
    finished = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(report["trials"]) == 6 and finished
    zoo = nw.LocalPool(pool, create=False)
    mine = [t["pool_entry"] for t in finished]
    assert len(set(mine)) == len(mine) and set(mine) <= set(zoo.names())  # one entry per finished trial
    assert set(before) <= set(zoo.names())  # nothing registered before the kill was lost
    # A trial that finished after the driver's last experiment snapshot is unknown to the
    # restored experiment (Tune restarts from the snapshot), but its network was trained to
    # the end and stays in the pool: such extras were all registered before the kill.
    extra = set(zoo.names()) - set(mine)
    assert extra <= set(before)
    for e in zoo:
        assert e.metrics["epochs"] == 2 and e.provenance["experiment"] == "mlp-digits", e
    assert all(not v for v in zoo.check(full=True).values())


def test_search_ray_joins_a_cluster_by_address_and_refuses_gpus_it_lacks(ray_cluster, tmp_path):
    """`--address HOST:PORT` of a running cluster (the test cluster): the command joins it, sees
    0 GPUs, and stops with one line before it creates the pool or any Tune experiment."""
    address = ray_cluster["cluster"].address
    proc = subprocess.run(
        [*CMD, "search", "mlp", "--backend", "ray", "--address", address, "--gpus-per-trial", "1",
         "--pool", str(tmp_path / "pool"), "--storage-path", str(tmp_path / "results")],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and f"the cluster at {address} has 0 GPUs" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_local_pool_on_a_directory_every_node_mounts_works_as_the_pool(ray_cluster, tmp_path):
    """No actor: the trials open the LocalPool themselves (here every node sees tmp_path)."""
    from nas_warmstart.integrations.ray import make_tuner

    zoo = nw.LocalPool(tmp_path / "pool")
    results = make_tuner("mlp", "digits", zoo, trials=3, epochs=1, max_concurrent=2, seed=1, scheduler="fifo",
                         name="zoo", storage_path=tmp_path / "results").fit()
    finished = [r.metrics for r in results if r.metrics.get("finished")]
    assert len(finished) == 3 and zoo.names() == sorted(m["pool_entry"] for m in finished)
    assert sum(m["warm_started"] for m in finished) >= 1  # the third started from one of the first two
    assert all(zoo.get(m["pool_entry"]).parent == m["warm_start_source"] for m in finished)


def test_search_ray_ctrl_c_is_one_line_exit_130_then_resume_continues_the_optuna_study(tmp_path):
    """Ctrl-C after the first trial's row: Tune saves the experiment, the command prints the
    resume command and exits 130; the resumed run finishes, and the searcher's Optuna study in
    --storage holds the trials."""
    import optuna

    argv = ["search", "mlp", "--backend", "ray", "--trials", "6", "--epochs", "2", "--pool", str(tmp_path / "pool"),
            "--storage-path", str(tmp_path / "results"), "--storage", f"sqlite:///{tmp_path}/s.db", "--seed", "2"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([*CMD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        header, first = proc.stdout.readline(), proc.stdout.readline()
        assert header.split()[:2] == ["trial", "state"] and first.split(), (header, first)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert lines == ["nas-warmstart: interrupted; continue the search with: nas-warmstart "
                     + " ".join([*argv, "--resume"])], err

    again = subprocess.run([*CMD, *argv, "--resume", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout.strip().splitlines()[-1])
    assert len(report["trials"]) == 6
    finished = sorted(t["pool_entry"] for t in report["trials"] if t["state"] == "COMPLETE")
    assert finished and nw.LocalPool(tmp_path / "pool", create=False).names() == finished
    study = optuna.load_study(study_name="mlp-digits", storage=f"sqlite:///{tmp_path}/s.db")
    assert len(study.trials) >= 6
