"""Your own model code as a rebuildable architecture: builders registered by name.

Optuna users write their model inside the objective, ``model = define_model(trial)``, with the
architecture drawn by ``trial.suggest_*`` calls. Registered under a name,

    >>> nw.register_builder("my-mlp", define_model)        # doctest: +SKIP

such a function becomes an architecture a pool can rebuild in any process that registered it:
``ArchSpec.builder("my-mlp", params)`` calls ``define_model(optuna.trial.FixedTrial(params))``,
which answers every ``suggest_*`` call with the stored value. A builder may also take keyword
arguments (``make_cnn(width=32, depth=3)``); then ``params`` are those arguments.

A pool stores only the builder's name and the parameters (plain JSON), never the function or
an import path: opening a pool runs no code that its writer chose. A process that reads an
entry whose builder it has not registered gets a :class:`NoBuilderError` naming the builder;
ranking and transferring from such an entry still work from its stored signature and tensors.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .._errors import InvalidArgumentError, NasWarmstartWarning, NoBuilderError, fix

__all__ = ["Builder", "find_builder", "get_builder", "list_builders", "register_builder"]

log = logging.getLogger(__name__)

Calls = Literal["trial", "kwargs"]
_CALLS = ("trial", "kwargs")


def _guess_calls(fn: Callable[..., Any]) -> Calls:
    """``"trial"`` for ``f(trial)``-shaped functions, else ``"kwargs"`` (see register_builder)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return "kwargs"
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) == 1:
        p = required[0]
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if "trial" in p.name.lower() or "Trial" in str(ann):
            return "trial"
    return "kwargs"


@dataclass(frozen=True)
class Builder:
    """A registered model-building function.

    Attributes:
        name: the registered name (what pool entries store).
        fn: the function.
        calls: ``"trial"`` (``fn(optuna.trial.FixedTrial(params))``) or ``"kwargs"``
            (``fn(**params)``).
    """

    name: str
    fn: Callable[..., nn.Module]
    calls: Calls

    def _kwarg_names(self) -> tuple[set[str], bool]:
        sig = inspect.signature(self.fn)
        names = {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        return names, var_kw

    def replay(self, params: Mapping[str, Any], *, device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """Build with ``params``; returns the module and the parameters the builder used.

        For a trial builder, the used parameters are those its ``suggest_*`` calls asked for
        (``params`` may hold more, e.g. a learning rate suggested elsewhere in the objective);
        for a keyword builder, those of ``params`` that are its arguments.

        Raises:
            InvalidArgumentError: the builder asked for a parameter ``params`` lacks, refused
                an argument, or returned something other than a module.
        """
        ctx = torch.device(device) if device is not None else nullcontext()
        if self.calls == "trial":
            import optuna

            trial = optuna.trial.FixedTrial(dict(params))
            try:
                with ctx, warnings.catch_warnings():
                    # FixedTrial warns when a stored value lies outside a suggest range; a
                    # builder whose ranges changed since the entry was written still rebuilds it.
                    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
                    model = self.fn(trial)
            except ValueError as e:
                if "not found" in str(e) and "parameter" in str(e):
                    raise InvalidArgumentError(
                        f"builder {self.name!r} asked for a parameter the spec does not hold ({e}); "
                        f"the spec has {sorted(params)}. Was the builder changed since the entry "
                        "was written?"
                    ) from None
                raise
            used = dict(trial.params)
        else:
            names, var_kw = self._kwarg_names()
            used = {k: v for k, v in params.items() if var_kw or k in names}
            try:
                with ctx:
                    model = self.fn(**used)
            except TypeError as e:
                raise InvalidArgumentError(
                    f"builder {self.name!r} cannot be called with {sorted(used)}: {e}"
                ) from None
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"builder {self.name!r} returned a {type(model).__name__}, not a torch.nn.Module"
            )
        return model, used


_BUILDERS: dict[str, Builder] = {}


def register_builder(
    name: str, fn: Callable[..., nn.Module] | None = None, *, calls: Calls | None = None
) -> Any:
    """Register a function that builds a model, so pools can rebuild what it built.

    Use it as a call, ``register_builder("my-mlp", define_model)``, or as a decorator,
    ``@register_builder("my-mlp")``; the function is returned unchanged. Register builders at
    import time of your module, in every process that reads the pool (workers, the
    ``nas-warmstart`` command cannot: it only ranks and transfers such entries).

    Args:
        name: the name entries store (letters, digits, ``. _ - + = @``).
        fn: ``fn(trial) -> nn.Module`` drawing the architecture with ``trial.suggest_*`` (the
            pattern of Optuna's examples), or ``fn(**kwargs) -> nn.Module``.
        calls: ``"trial"`` or ``"kwargs"``; by default ``"trial"`` when ``fn`` takes one
            required argument whose name contains ``trial`` or that is annotated with an
            Optuna trial type, else ``"kwargs"``.

    Re-registering the same function under its name is a no-op; another function under a
    taken name replaces it with a :class:`~nas_warmstart.NasWarmstartWarning`.
    """
    from .base import check_name  # the same name rule as pool entries

    check_name(name)
    if calls is not None and calls not in _CALLS:
        raise InvalidArgumentError(f"calls must be one of {_CALLS} or None, got {calls!r}")

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(f):
            raise InvalidArgumentError(f"a builder must be callable, got {type(f).__name__}")
        b = Builder(name, f, calls or _guess_calls(f))
        old = _BUILDERS.get(name)
        if old is not None and (old.fn is not f or old.calls != b.calls):
            warnings.warn(f"builder {name!r} is already registered; the new function replaces it",
                          NasWarmstartWarning, stacklevel=3)
        _BUILDERS[name] = b
        return f

    return deco if fn is None else deco(fn)


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``.

    Raises:
        NoBuilderError: none is registered in this process.
    """
    try:
        return _BUILDERS[name]
    except KeyError:
        have = sorted(_BUILDERS)
        raise NoBuilderError(
            f"no builder {name!r} is registered in this process"
            + (f" (registered: {', '.join(have)})" if have else " (none is)") + "; "
            + fix(f"call nas_warmstart.register_builder({name!r}, your_function) before rebuilding "
                  "this architecture, e.g. at import time of the module that defines the function",
                  "the nas-warmstart command runs none of your code, so it ranks and transfers from "
                  "such entries but cannot rebuild them: do that in Python after "
                  f"nas_warmstart.register_builder({name!r}, your_function)")
        ) from None


def list_builders() -> list[str]:
    """Names of the registered builders, sorted."""
    return sorted(_BUILDERS)


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """What two modules of one architecture share: module classes by name, tensor shapes."""
    mods = tuple((n, type(m).__name__) for n, m in model.named_modules())
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict(keep_vars=True).items())
    return mods, shapes


def find_builder(model: nn.Module, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Which registered builder made ``model`` from ``params``, by replaying each one.

    Every builder is replayed on the meta device (structure only, no memory) with ``params``;
    one whose module has ``model``'s module classes and tensor shapes made it. Returns
    ``(builder name, the parameters it used)``, or None when none (or more than one) fits.
    """
    if not _BUILDERS:
        return None
    want = _structure(model)
    fits: list[tuple[str, dict[str, Any]]] = []
    for name, b in sorted(_BUILDERS.items()):
        if b.calls == "kwargs":
            names, var_kw = b._kwarg_names()
            if not var_kw and not names & set(params):
                continue  # its defaults alone did not come from this trial
        try:
            rebuilt, used = b.replay(params, device="meta")
        # The builders are user code replayed with parameters meant for another one; an error
        # means "not this builder". A missing parameter is the usual case; anything else may be
        # a builder that cannot build on the meta device, which the user should be able to see.
        except Exception as e:
            level = logging.DEBUG if isinstance(e, InvalidArgumentError) else logging.INFO
            log.log(level, "builder %s does not rebuild this model: %s: %s", name, type(e).__name__, e)
            continue
        if _structure(rebuilt) == want:
            fits.append((name, used))
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        warnings.warn(
            f"builders {', '.join(n for n, _ in fits)} all rebuild this model from the trial's "
            "parameters; it is stored without a builder. Pass spec=ArchSpec.builder(name, params) "
            "to choose one", NasWarmstartWarning, stacklevel=3)
    return None
