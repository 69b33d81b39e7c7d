"""A search worker run in child processes by the Optuna tests, as a user runs one.

``python -m tests._optuna_workers <storage> <study> <pool> <n_trials> [artifacts_dir] [--hang-after N]``
(or ``open-study ...``, see :func:`open_together`)

* ``storage``: an RDB URL (``sqlite:///...``), ``heartbeat:<sqlite url>`` (RDBStorage with a
  1 s heartbeat, so a killed worker's trial is failed by the next worker; LocalPool pools), or
  ``journal:<file>`` (JournalFileBackend);
* ``pool``: a LocalPool directory, or ``artifacts`` to keep the pool in the study's storage +
  a FileSystemArtifactStore at ``artifacts_dir``.

Prints ``TRIAL <number> DONE`` after each finished trial, flushed. With ``--hang-after N``
the process's trial N+1 trains and registers its network, prints ``TRIAL <number> REGISTERED``
and then hangs before Optuna can mark it complete, so a test can kill the worker at that point
(the worst one: an entry in the pool for a trial that never completes) at a known moment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
import torch

from nas_warmstart import LocalPool
from nas_warmstart.integrations.optuna import (
    OptunaArtifactPool,
    PoolCallback,
    make_objective,
    open_study,
)

SPACE = "mlp"
EPOCHS = 1


def open_storage(spec: str, pool: str):
    if spec.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(spec[len("journal:"):]))
    if spec.startswith("heartbeat:"):
        # The stale trial of a killed worker is failed when the next worker starts; the
        # callback removes a pool entry it may have registered before dying.
        return optuna.storages.RDBStorage(spec[len("heartbeat:"):], heartbeat_interval=1, grace_period=3,
                                          failed_trial_callback=PoolCallback(LocalPool(pool)))
    return spec


def open_pool(study, pool: str, artifacts: str | None):
    if pool == "artifacts":
        from optuna.artifacts import FileSystemArtifactStore

        assert artifacts is not None
        return OptunaArtifactPool(study, FileSystemArtifactStore(artifacts))
    return LocalPool(pool)


def open_together(directory: str, worker: int, workers: int, rounds: int) -> None:
    """``open-study <dir> <worker> <workers> <rounds>``: in each round every worker waits for the
    others (a file barrier), then all open one study on the same new SQLite file at once."""
    root = Path(directory)
    for r in range(rounds):
        (root / f"ready-{r}-{worker}").touch()
        deadline = time.monotonic() + 60
        while len(list(root.glob(f"ready-{r}-*"))) < workers:
            if time.monotonic() > deadline:
                sys.exit(f"round {r}: another worker never arrived (it failed)")
            time.sleep(0.001)
        open_study(storage=f"sqlite:///{root}/round{r}.db", study_name="together", direction="maximize")
    print("OPENED", rounds, flush=True)


def main(argv: list[str]) -> None:
    if argv[0] == "open-study":
        open_together(argv[1], *map(int, argv[2:5]))
        return
    hang_after = None
    if "--hang-after" in argv:
        i = argv.index("--hang-after")
        hang_after = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    storage, study_name, pool_arg, n_trials = argv[0], argv[1], argv[2], int(argv[3])
    artifacts = argv[4] if len(argv) > 4 else None
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(storage=open_storage(storage, pool_arg), study_name=study_name, direction="maximize",
                       sampler=optuna.samplers.RandomSampler())
    pool = open_pool(study, pool_arg, artifacts)
    # Every trial trains and registers: these workers test concurrent pool writes, and an
    # unseeded sampler sometimes repeats a config of the small space (a repeat registers nothing).
    objective = make_objective(SPACE, "digits", pool, epochs=EPOCHS, pruning=False, skip_duplicates=False)
    started = 0

    def run(trial: optuna.trial.Trial) -> float:
        nonlocal started
        value = objective(trial)  # trains and registers the network
        started += 1
        if hang_after is not None and started > hang_after:
            print(f"TRIAL {trial.number} REGISTERED", flush=True)
            time.sleep(600)  # the test kills the process here
        return value

    def announce(study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(f"TRIAL {trial.number} DONE", flush=True)

    study.optimize(run, n_trials=n_trials, callbacks=[PoolCallback(pool), announce])


if __name__ == "__main__":
    main(sys.argv[1:])
