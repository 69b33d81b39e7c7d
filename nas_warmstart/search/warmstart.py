"""One call for a search trial: rank the pool, transfer from the nearest, set up guidance."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .._args import positive_int
from .._errors import InvalidArgumentError, NasWarmstartWarning, NoBuilderError, PoolError
from ..dpiat.signature import LayersMode, signature
from ..dpiat.transfer import TransferReport, transfer
from ..pool.base import Pool, Ranked

__all__ = ["WarmStart", "check_guidance", "guidance_for", "warm_start"]

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """The outcome of :func:`warm_start`.

    Attributes:
        source: the pool entry the weights came from (None when a module was given).
        similarity: DPIAT similarity of source and target.
        report: the :class:`TransferReport` (every copied tensor, coverage, ...).
        guide: the source network (trained, frozen use only), e.g. for guidance; a
            :class:`~nas_warmstart.StoredNetwork` (tensors only, cannot run) for an entry
            without a builder.
        guidance: a :class:`~nas_warmstart.guidance.GuidanceLoss` to pass to ``fit``, or None
            (also when guidance was asked for but the source has no builder: a warning says so).
        candidates: the ranked pool entries that were considered.
    """

    source: str | None
    similarity: float
    report: TransferReport
    guide: nn.Module
    guidance: Any = None
    candidates: list[Ranked] = field(default_factory=list)

    def __repr__(self) -> str:  # the dataclass repr would print the report and both networks
        return (f"WarmStart(source={self.source!r}, similarity={self.similarity:.3f}, "
                f"coverage={self.report.coverage:.3f}, tensors={len(self.report.copied)}, "
                f"guided={self.guidance is not None})")

    def provenance(self) -> dict[str, Any]:
        """JSON facts for bookkeeping (pool ``provenance``, Optuna ``user_attrs``)."""
        return {
            "source": self.source,
            "similarity": self.similarity,
            "coverage": self.report.coverage,
            "matching": self.report.matching,
            "method": self.report.method,
            "guided": self.guidance is not None,
        }


def check_guidance(spec: Any) -> None:
    """Refuse a ``guidance=`` argument that is not None, a bool, a pairing name or a dict."""
    if spec is None or isinstance(spec, (bool, str, Mapping)):
        return
    raise InvalidArgumentError(
        f"guidance must be None, True, a pairing name ('uniform', 'dpiat', 'paper') or a dict of "
        f"GuidanceLoss arguments (e.g. {{'steps': 300}}), got {type(spec).__name__}"
    )


def guidance_for(guide: nn.Module, target: nn.Module, spec: Any) -> Any:
    """The guidance loss ``warm_start(guidance=spec)`` builds for ``target`` with ``guide``
    (None when ``spec`` is None/False, or when ``guide`` cannot run: a warning says so)."""
    check_guidance(spec)
    if spec is None or spec is False:
        return None
    from ..pool.stored import StoredNetwork
    from ..training.guidance import GuidanceLoss

    if isinstance(guide, StoredNetwork):
        # The transfer needs only tensors; guidance needs a network that runs. Training goes
        # on unguided rather than failing the candidate.
        warnings.warn(
            f"warm start from pool entry {guide.entry_name!r} without guidance: "
            f"{guide._no_builder('guide training')}", NasWarmstartWarning, stacklevel=3)
        return None

    if spec is True:
        return GuidanceLoss(guide, target)
    if isinstance(spec, str):
        return GuidanceLoss(guide, target, pairs=spec)
    assert isinstance(spec, Mapping)
    return GuidanceLoss(guide, target, **dict(spec))


def _recalibrate(target: nn.Module, data: Any, report: TransferReport) -> None:
    if data is None:
        return
    from ..training.fit import recalibrate_bn

    n = recalibrate_bn(target, data)
    if n:
        report.notes.append(f"BatchNorm running statistics re-estimated on {n} images after the transfer")


def warm_start(
    target: nn.Module,
    pool_or_source: Pool | nn.Module,
    *,
    k: int = 1,
    guidance: bool | str | Mapping[str, Any] | None = None,
    dataset: str | None = None,
    min_metric: float | Mapping[str, float] | None = None,
    exclude: Sequence[str] = (),
    min_similarity: float = 0.0,
    matching: str = "dp",
    method: str = "clip",
    bn_stats: bool = True,
    layers: LayersMode = "extended",
    bn_data: Any = None,
    warn_weak: bool = True,
) -> WarmStart | None:
    """Initialise ``target`` in place from the most similar trained network.

    Args:
        target: the candidate network (changed in place under no_grad).
        pool_or_source: a pool (:class:`LocalPool`, or anything with its ``rank``/``load``, such
            as the Optuna-artifact pool), ranked by similarity, or one trained module.
        k: how many of the top-ranked entries to try, in order, if loading one fails (a
            damaged entry is skipped with a warning).
        guidance: also build a :class:`~nas_warmstart.guidance.GuidanceLoss` with the source
            as a frozen guide: True (defaults), a pairing name, or a dict of its arguments.
        dataset, min_metric, exclude: pool filters, as in :meth:`LocalPool.rank`.
        min_similarity: cold-start instead of transferring from a pool entry less similar than
            this. On digits, pairs below similarity 0.3 gave 0.66–1.20× the random-init
            accuracy after one epoch (ConvNeXt → MobileNetV3 at 0.17 was the harmful one;
            BENCHMARKS.md), so 0.3 is a cautious value; the default transfers whatever the
            distance, as the paper does.
        matching, method, bn_stats, layers: as in :func:`nas_warmstart.transfer`.
        bn_data: data to re-estimate the target's BatchNorm running statistics on after the
            transfer (:func:`nas_warmstart.recalibrate_bn`: ``DataSplits`` — its training
            split — or an iterable of ``(x, y)`` batches), so that an eval-mode score of the
            warm-started network before any training reflects its copied weights. None keeps
            the copied (``bn_stats=True``) or initial statistics. :func:`nas_warmstart.fit`
            re-estimates them before every validation anyway.
        warn_weak: warn about a weak transfer (see :func:`nas_warmstart.transfer`); the
            report's ``weak`` says it either way.

    Returns:
        The :class:`WarmStart`, or None when the pool has no eligible entry (the target keeps
        its initialisation: a cold start).
    """
    if not isinstance(target, nn.Module):
        raise InvalidArgumentError(f"target must be a torch.nn.Module, got {type(target).__name__}")
    positive_int("k", k)
    if not isinstance(min_similarity, (int, float)) or not 0.0 <= min_similarity <= 1.0:
        raise InvalidArgumentError(f"min_similarity must be a number in [0, 1], got {min_similarity!r}")
    first_param = next(target.parameters(), None)  # the guide goes where the target is
    if isinstance(pool_or_source, nn.Module):
        source = pool_or_source
        report = transfer(source, target, matching=matching, method=method, bn_stats=bn_stats, layers=layers,
                          warn_weak=False)
        if warn_weak and report.weak:
            warnings.warn(report.weak, NasWarmstartWarning, stacklevel=2)
        _recalibrate(target, bn_data, report)
        return WarmStart(
            source=None, similarity=report.similarity, report=report, guide=source,
            guidance=guidance_for(source, target, guidance),
        )
    if not isinstance(pool_or_source, Pool):
        raise InvalidArgumentError(
            f"pool_or_source must be a pool (LocalPool, OptunaArtifactPool) or a trained nn.Module, "
            f"got {type(pool_or_source).__name__}"
        )
    zoo = pool_or_source
    sig = signature(target, layers=layers)
    ranked = zoo.rank(sig, k=k, dataset=dataset, min_metric=min_metric, exclude=exclude, layers=layers)
    for r in ranked:
        if r.similarity < min_similarity:
            log.info("warm start: nearest eligible entry %s has similarity %.3f < %.3f; cold start",
                     r.name, r.similarity, min_similarity)
            break
        try:
            source = zoo.load_source(r.name)
        except (PoolError, NoBuilderError) as e:
            warnings.warn(f"warm start: skipping pool entry {r.name!r}: {e}", NasWarmstartWarning, stacklevel=2)
            continue
        if first_param is not None:
            source = source.to(first_param.device)
        report = transfer(source, target, matching=matching, method=method, bn_stats=bn_stats, layers=layers,
                          warn_weak=False)
        if warn_weak and report.weak:
            warnings.warn(report.weak, NasWarmstartWarning, stacklevel=2)
        _recalibrate(target, bn_data, report)
        log.info("warm start from %s (similarity %.3f): %s", r.name, r.similarity, report.summary())
        return WarmStart(
            source=r.name, similarity=r.similarity, report=report, guide=source,
            guidance=guidance_for(source, target, guidance), candidates=ranked,
        )
    return None
