"""What :func:`nas_warmstart.run` hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..search.records import TrialRecord
    from ._config import RunConfig

__all__ = ["RunResult"]


@dataclass(frozen=True)
class RunResult:
    """One finished run: its studies' trials, the winner, the conversion, the files.

    Attributes:
        trials: ``{"warm": [...], "cold": [...]}`` (``cold`` only with a baseline), each the
            report's trial records in trial order.
        winner: the exported winner as the report's ``WINNER`` record (its trial, origin,
            architecture, spec, re-measured accuracies, params, latency, file names).
        winner_rule: one sentence: how the winner was chosen.
        conversion: the conversion's record (``{"skipped": reason, ...}`` when skipped), or
            None without ``convert``.
        exported: the exported files (``weights``, ``spec``, ``onnx``; None: not written).
        files: the report's files (``markdown``, ``html``, ``run``, the plots).
        record: the run record the report is drawn from (``nas_warmstart.report``'s format).
        seconds: the wall time of this call.
    """

    config: RunConfig
    study_name: str
    storage: str
    out: Path
    trials: dict[str, list[TrialRecord]]
    winner: dict[str, Any]
    winner_rule: str
    conversion: dict[str, Any] | None
    exported: dict[str, Path | None]
    files: dict[str, Path]
    record: dict[str, Any] = field(repr=False)
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        """The run's headline numbers in words (what ``nas-warmstart run`` prints at the end)."""
        from ..report import summary_lines

        return list(summary_lines(self.record))
