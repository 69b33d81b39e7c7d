"""Warm-started Optuna studies: every trial starts from the most similar trained network.

Three ways in, from least to most ready-made:

* :class:`WarmStarter` in **your own objective**: after your ``suggest_*`` calls built the
  candidate (your own ``define_model(trial)``, registered with
  :func:`nas_warmstart.register_builder` so the pool can rebuild it), ``initialize(model)``
  ranks the pool, copies weights from the nearest trained network (DPIAT) and records the
  provenance in ``trial.user_attrs``; after training, ``register(model, metrics)`` adds the
  trained candidate to the pool so later trials start even closer.
* :func:`make_objective` for a **search space** (:mod:`search_spaces`): suggest, build,
  warm-start, train with per-epoch ``trial.report`` / pruning, register; single- or
  multi-objective (accuracy against params, FLOPs or latency). A candidate that cannot be
  built, cannot take the data or diverges makes its trial FAIL with ``user_attrs
  ["fail_reason"]``; the study goes on.
* :class:`OptunaArtifactPool`: the pool kept in the study's own storage + an Optuna artifact
  store (the Optuna FAQ's way to keep per-trial models), so workers on several machines that
  share an RDB or Journal storage and the artifact store share one pool.

Plus :class:`PoolCallback` (``study.optimize(callbacks=[...])``: removes pool entries of trials
that did not complete), :func:`optimize_with_pool` (``study.optimize`` with it and a
:class:`TrialRows` printer, dropping unfinished trials' entries on a Ctrl-C; see
:mod:`.registration` for where entries are registered and forgotten), :func:`enqueue_pool`
(seed a study with the architectures of a pool; their trials start as exact copies of the
trained entries), :func:`open_study` (create or continue a study from several workers started
at the same moment) and :func:`check_storage_url` (refuse a storage URL that cannot work).

User attributes written on every trial that went through a :class:`WarmStarter`:
``warm_started`` (bool), ``warm_start_source`` (pool entry or None), ``warm_start_similarity``,
``warm_start_coverage`` (fraction of the candidate's parameter elements copied),
``warm_start_guided``, ``warm_start_weak`` (similarity < 0.1 or coverage < 5 %: consider
``min_similarity``); after ``register``: ``pool_entry``, the name it got: ``<study>-t<number>``,
or ``<study>-<id6>-t<number>`` when another study's network holds that name (a study's id, in
its user attribute ``nas_warmstart:study_id``, is recorded in its entries' provenance, and a
trial never replaces an entry that is not its own). Warm-started trials converge faster,
which a ``MedianPruner`` compares against cold ones; ``warm_started`` lets you analyse that.

Threads (``n_jobs``) and processes sharing one storage work with one pool: a
:class:`~nas_warmstart.LocalPool` on a shared local filesystem, or an :class:`OptunaArtifactPool`.
"""

from __future__ import annotations

from nas_warmstart.search.metrics import measure_latency

from .callbacks import enqueue_pool
from .objective import SearchObjective, make_objective
from .pool import ArtifactEntry, OptunaArtifactPool
from .registration import PoolCallback, optimize_with_pool
from .rows import TrialRows
from .starter import (
    DUPLICATE_ATTR,
    ENTRY_ATTR,
    ENTRY_SPEC_ATTR,
    SEED_ATTR,
    WarmStarter,
    trial_entry_name,
)
from .study import check_storage_url, open_study

__all__ = [
    "DUPLICATE_ATTR",
    "ENTRY_ATTR",
    "ENTRY_SPEC_ATTR",
    "SEED_ATTR",
    "ArtifactEntry",
    "OptunaArtifactPool",
    "PoolCallback",
    "SearchObjective",
    "TrialRows",
    "WarmStarter",
    "check_storage_url",
    "enqueue_pool",
    "make_objective",
    "measure_latency",
    "open_study",
    "optimize_with_pool",
    "trial_entry_name",
]
