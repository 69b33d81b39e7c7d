"""The one seam between the pipeline and what runs the trials: :class:`SearchBackend`.

A back end opens (or restores) a study, runs it to the configured size and hands back its
trials as the report's plain trial records (:data:`~nas_warmstart.search.records.TrialRecord`);
everything after that (the winner, conversion, export, the record) is the pipeline's, the same
for both. Registering a trial's network in the pool, and dropping the entries of trials that
did not finish (a Ctrl-C, a killed run), happen inside :meth:`SearchBackend.search`, and
nowhere else in the pipeline: through :mod:`nas_warmstart.integrations.optuna.registration`
for Optuna, inside the Tune trainable for Ray.

:class:`OptunaBackend` runs trials in this process; :class:`RayBackend` runs Ray Tune
experiments kept under ``OUT/ray`` and imports ray only when it runs (``import nas_warmstart``
never imports ray).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import InvalidArgumentError
from ..search.records import RUN_ATTR, TrialRecord, trial_records

if TYPE_CHECKING:
    import optuna

    from ..pool.local import LocalPool
    from ._config import RunConfig

__all__ = ["INTERRUPTED_ATTR", "STATE_FILE", "OptunaBackend", "RayBackend", "SearchBackend", "silent"]

#: the trial user attribute marking a trial that a Ctrl-C or a killed process ended.
INTERRUPTED_ATTR = "interrupted"  # the same as integrations.optuna.stale's (not imported: optuna is lazy)
#: a Ray run's facts (an Optuna run keeps them in its study).
STATE_FILE = "state.json"
RAY_DIR = "ray"

Echo = Callable[[str], None]


def silent(text: str) -> None:
    """An ``echo`` that drops every line and keeps the trial rows quiet (``run --json``)."""


class SearchBackend(Protocol):
    """What runs a run's searches."""

    #: the Optuna storage URL the report names ("" when the back end has none).
    storage: str

    def load_facts(self) -> dict[str, Any]:
        """What an earlier run of the same job recorded (empty for a new run)."""

    def save_facts(self, facts: dict[str, Any]) -> None:
        """Keep what a rerun needs (plain JSON)."""

    def study_id(self) -> str | None:
        """An id that tells this run's study from another's of the same name, or None."""

    def search(self, config: RunConfig, study_name: str, *, cold: bool, label: str,
               echo: Echo) -> list[TrialRecord]:
        """Run (or continue) study ``study_name`` to ``config.trials`` finished trials; every
        trial's record, in trial order. ``cold``: from random init, nothing registered."""


def atomic_json(path: Path, value: Any) -> None:
    from .._files import write_atomic

    write_atomic(path, (json.dumps(value, indent=1, default=str) + "\n").encode())


# ------------------------------------------------------------------------------ Optuna


class _Interruptible:
    """The objective, marking the trial a Ctrl-C ends (Optuna then records it as failed)."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> Any:
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise


def _finished(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts towards ``trials``: it ran to an end of its own."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))


def open_run_study(storage: str, name: str, directions: Sequence[str], seed: int,
                   objectives: Sequence[str]) -> optuna.Study:
    import optuna
    import sqlalchemy.exc

    from .._errors import one_line
    from ..integrations.optuna import open_study

    try:
        study = open_study(storage=storage, study_name=name, directions=list(directions), seed=seed)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise InvalidArgumentError(f"cannot open --storage {storage!r}: {one_line(e)[:300]}") from None
    except ValueError as e:  # the study exists with other directions
        raise InvalidArgumentError(f"study {name!r} in {storage}: {one_line(e)}; give another --study-name") from None
    if study.metric_names is None:
        import warnings

        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    return study


class OptunaBackend:
    """Trials in this process: an Optuna study per search, in ``storage``; the run's facts in
    the warm study's user attribute ``nas_warmstart:run``."""

    def __init__(self, config: RunConfig, storage: str, name: str, objective: Any, objective_kwargs: dict[str, Any],
                 zoo: Callable[[], LocalPool]) -> None:
        self.storage, self.name = storage, name
        self.objective, self.kwargs, self._zoo = objective, objective_kwargs, zoo
        self.studies: dict[str, optuna.Study] = {}
        self.study = self._open(config, name, objective)

    def _open(self, config: RunConfig, name: str, objective: Any) -> optuna.Study:
        study = open_run_study(self.storage, name, objective.directions, config.seed, config.objectives)
        self.studies[name] = study
        return study

    def load_facts(self) -> dict[str, Any]:
        return dict(self.study.user_attrs.get(RUN_ATTR) or {})

    def save_facts(self, facts: dict[str, Any]) -> None:
        self.study.set_user_attr(RUN_ATTR, json.loads(json.dumps(facts, default=str)))

    def study_id(self) -> str | None:
        from ..integrations.optuna.starter import study_id

        return str(study_id(self.study))

    def search(self, config: RunConfig, study_name: str, *, cold: bool, label: str,
               echo: Echo) -> list[TrialRecord]:
        from ..integrations.optuna import TrialRows, make_objective, optimize_with_pool
        from ..integrations.optuna.stale import close_stale_trials

        if cold:
            objective = make_objective(config.space, self.objective.data, None, **self.kwargs)
            study = self._open(config, study_name, objective)
            pool = None
        else:
            objective, study = self.objective, self.studies[study_name]
            pool = self._zoo()
            objective.pool = pool
        # `run` is the only process of its study, so a RUNNING trial at start-up belongs to a
        # run that was killed (SIGKILL, power loss) before Optuna could record its end
        stale = close_stale_trials(study, pool, heartbeat_only=False)
        quiet = echo is silent
        done = sum(_finished(t) for t in study.get_trials(deepcopy=False))
        todo = config.trials - done
        if not quiet:
            more = f"; {stale} trial(s) a killed run left open marked interrupted" if stale else ""
            echo(f"\n{label}: study {study.study_name!r}, {done} of {config.trials} trials done{more}"
                 + ("" if todo > 0 else ", nothing to run"))
        if todo > 0:
            rows = TrialRows(objective, objective.objectives, quiet=quiet, emit=echo)
            optimize_with_pool(study, _Interruptible(objective), n_trials=todo, pool=pool, rows=rows)
        return trial_records(study)


# ------------------------------------------------------------------------------ Ray


class RayBackend:
    """Ray Tune experiments under ``OUT/ray`` (the pool owned by a ``RayPool`` actor while they
    run); a rerun restores each one (``Tuner.restore``). The run's facts: ``OUT/state.json``."""

    storage = ""

    def __init__(self, config: RunConfig) -> None:
        self.out = Path(config.out)
        self.path = self.out / STATE_FILE

    def load_facts(self) -> dict[str, Any]:
        from .._errors import one_line

        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InvalidArgumentError(f"{str(self.path)!r} is damaged ({one_line(e)}); remove it to start the run "
                                       "over (the Tune experiments and the pool stay)") from None

    def save_facts(self, facts: dict[str, Any]) -> None:
        atomic_json(self.path, json.loads(json.dumps(facts, default=str)))

    def study_id(self) -> str | None:
        return None

    def search(self, config: RunConfig, study_name: str, *, cold: bool, label: str,
               echo: Echo) -> list[TrialRecord]:
        from ._ray import ray_search

        return ray_search(config, study_name, cold=cold, label=label, echo=echo,
                          storage_path=str(self.out / RAY_DIR))
