"""TrialRows: an Optuna callback printing one row per finished trial (see :mod:`nas_warmstart.search.rows`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial

from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.search.rows import RowPrinter

from .starter import DUPLICATE_ATTR, ENTRY_ATTR, REUSED_ATTR

__all__ = ["TrialRows"]


class TrialRows:
    """``study.optimize(callbacks=[TrialRows(objective, objectives, quiet=False)])``: a row per
    finished trial, as it finishes.

    Args:
        objective: the study's :class:`~nas_warmstart.integrations.optuna.SearchObjective`
            (its search space describes each trial's architecture).
        objectives: the study's objectives, in order.
        quiet: print nothing; :meth:`row` still reads trials.
        emit: where lines go (None: ``print``, flushed).
    """

    def __init__(self, objective: Any, objectives: Sequence[str], *, quiet: bool,
                 emit: Callable[[str], None] | None = None) -> None:
        self.objective = objective
        self.printer = RowPrinter(objectives, quiet=quiet, emit=emit)

    def row(self, t: FrozenTrial) -> dict[str, Any]:
        """Trial ``t`` as a row (plus its ``pool_entry``)."""
        a = t.user_attrs
        return {"number": t.number, "state": t.state.name, "values": t.values,
                "architecture": (self.objective.space.describe(ArchSpec.from_dict(a["spec"]).config)
                                 if "spec" in a else None),
                "source": a.get("warm_start_source"), "similarity": a.get("warm_start_similarity"),
                "duplicate_of": a.get(DUPLICATE_ATTR), "reused_entry": a.get(REUSED_ATTR),
                "pool_entry": a.get(ENTRY_ATTR),
                "fail_reason": a.get("fail_reason")}

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        self.printer.print(self.row(trial))
