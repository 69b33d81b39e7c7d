"""What a transfer did: every copied tensor, every untouched one, the coverage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LOW_COVERAGE", "LOW_SIMILARITY", "CopiedTensor", "TransferReport", "UntouchedTensor"]


@dataclass
class CopiedTensor:
    """One tensor written into the target."""

    target: str
    source: str
    target_shape: tuple[int, ...]
    source_shape: tuple[int, ...]
    target_index: str
    source_index: str
    rule: str
    written: int


@dataclass
class UntouchedTensor:
    """A target parameter left (wholly or partly) at its initialisation."""

    target: str
    numel: int
    written: int
    reason: str


#: ``transfer`` warns below these: such a copy mostly leaves the target at its init, or
#: copies between architectures too different for the copied tensors to mean much.
LOW_COVERAGE = 0.05
LOW_SIMILARITY = 0.10


@dataclass
class TransferReport:
    """What :func:`transfer` did.

    Attributes:
        matching, method: the strategies used.
        score: the matching's raw score (for ``dp``, D(S→T)).
        similarity: the DPIAT similarity of the two architectures.
        coverage: fraction of target parameter elements written.
        written, total: target parameter elements written / in total.
        copied: every tensor written, with its slices.
        untouched: every target parameter not fully written, with the reason.
        identical: the architectures were identical (and the target became an exact copy).
        notes: fallbacks taken (dtype/device casts, rules that could not apply).
        seconds: wall time of the whole transfer.
    """

    matching: str
    method: str
    score: float
    similarity: float
    coverage: float
    written: int
    total: int
    copied: list[CopiedTensor] = field(default_factory=list)
    untouched: list[UntouchedTensor] = field(default_factory=list)
    identical: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs."""
        ident = ", identical architecture: exact copy" if self.identical else ""
        return (
            f"transfer {self.matching}/{self.method}: similarity {self.similarity:.3f}, "
            f"coverage {self.coverage:.1%} ({self.written:,}/{self.total:,} elements), "
            f"{_plural(len(self.copied), 'tensor')} copied, "
            f"{_plural(len(self.untouched), 'parameter')} not fully written{ident} "
            f"[{self.seconds * 1e3:.0f} ms]"
        )

    @property
    def weak(self) -> str | None:
        """Why this transfer is weak (similarity below :data:`LOW_SIMILARITY` or coverage
        below :data:`LOW_COVERAGE`), or None."""
        if self.identical or (self.coverage >= LOW_COVERAGE and self.similarity >= LOW_SIMILARITY):
            return None
        return (
            f"weak transfer: similarity {self.similarity:.3f}, {100 * self.coverage:.1f}% of the "
            f"target's parameter elements copied (warned below similarity {LOW_SIMILARITY} or "
            f"coverage {LOW_COVERAGE:.0%}); the target stays mostly its own initialisation, so expect "
            "little from the copy. Pick a more similar source (rank the pool), or cold-start: "
            "warm_start(..., min_similarity=0.3)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (e.g. for ``trial.set_user_attr`` or ``--json``)."""
        return asdict(self)



def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

