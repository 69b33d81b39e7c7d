"""Forward passes observed, cut short and rewired at named modules.

The building blocks that plans (where a network can be cut) and stages (what a part produces)
share: every hook goes through :func:`~nas_warmstart.align.capture.forward_hooks`, every
"evaluate, then put the modes back" through :func:`eval_mode`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._errors import InvalidArgumentError
from ..align.capture import first_tensor, forward_hooks

__all__ = ["Stop", "eval_forward", "eval_mode", "forward_outputs", "is_cut", "output_shape", "record_outputs",
           "truncated_output"]


class Stop(Exception):
    """Raised in a forward hook to end a forward pass early (a truncated forward)."""


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode for the block, then give every submodule its mode back.

    On exit each model is set back with ``model.train(mode)`` (so overridden ``train`` methods
    run, as for ``model.eval()``), and any submodule whose own mode differed from its model's
    (a frozen BatchNorm in a training network) gets that mode back too. Also on an exception.
    """
    saved = [(model, model.training, [(m, m.training) for m in model.modules()]) for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode, modes in saved:
            model.train(mode)
            for m, flag in modes:
                if m.training != flag:
                    m.training = flag


def eval_forward(model: nn.Module, x: Tensor) -> Tensor:
    """The model's output tensor on ``x``, in eval mode and without gradients (modes restored)."""
    with eval_mode(model), torch.no_grad():
        return first_tensor("", model(x))


@contextlib.contextmanager
def record_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[list[tuple[str, Tensor]]]:
    """Record ``(name, output)`` of the named modules, in call order (a module that runs twice
    appears twice; outputs that are not tensors are skipped)."""
    calls: list[tuple[str, Tensor]] = []

    def make(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            with contextlib.suppress(InvalidArgumentError):
                calls.append((name, first_tensor(name, out)))

        return hook

    with forward_hooks(model, {n: make(n) for n in names}):
        yield calls


def forward_outputs(model: nn.Module, x: Tensor, names: Sequence[str], *, stop_at: str | None = None,
                    replace: Mapping[str, Callable[[Tensor], Tensor]] | None = None) -> dict[str, Tensor]:
    """Outputs of the modules ``names`` on ``x`` (``""``: the model's output).

    Args:
        model: the network (run in its current mode).
        x: the input batch.
        names: the modules whose outputs are returned.
        stop_at: the pass ends right after this module (``""``/None: a full pass).
        replace: ``replace[name](output)`` substitutes a module's output (after it is recorded),
            so later modules consume the substitute.

    Returns:
        name -> output tensor (tuple outputs: element 0), for the names that ran.
    """
    replace = replace or {}
    out: dict[str, Tensor] = {}
    hooked = [n for n in dict.fromkeys([*names, *replace, *([stop_at] if stop_at else [])]) if n]

    def make(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, o: Any) -> Any:
            t = first_tensor(name, o)
            if name in names:
                out[name] = t
            if name == stop_at:
                raise Stop
            if name in replace:
                new = replace[name](t)
                return (new, *o[1:]) if isinstance(o, tuple) else new
            return None

        return hook

    with forward_hooks(model, {n: make(n) for n in hooked}):
        try:
            y = model(x)
            if "" in names:
                out[""] = first_tensor("", y)
        except Stop:
            pass
    return out


def truncated_output(model: nn.Module, name: str, x: Tensor) -> Tensor:
    """The output of module ``name`` on ``x``; the pass ends there (``""``: the model's output).

    Raises:
        InvalidArgumentError: the module did not run.
    """
    if not name:
        return first_tensor("", model(x))
    box: list[Tensor] = []

    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        box.append(first_tensor(name, out))
        raise Stop

    with forward_hooks(model, {name: hook}), contextlib.suppress(Stop):
        model(x)
    if not box:
        raise InvalidArgumentError(f"module {name!r} did not run in the forward pass; it cannot end a part")
    return box[0]


def output_shape(model: nn.Module, name: str, x: Tensor) -> tuple[int, ...]:
    """The shape of module ``name``'s output for one image (no batch dim), traced on ``x[:2]``."""
    with eval_mode(model), torch.no_grad():
        return tuple(truncated_output(model, name, x[:2]).shape[1:])


def is_cut(model: nn.Module, name: str, x: Tensor) -> bool:
    """Whether the model's output depends on the input only through ``name``'s output.

    Rule: replace the module's output by a detached copy and check that the output has no
    gradient path back to the input.
    """

    def hook(_m: nn.Module, _a: Any, out: Any) -> Any:
        if isinstance(out, Tensor):
            return out.detach()
        if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            return (out[0].detach(), *out[1:])
        return out

    xi = x.detach().clone().requires_grad_(True)
    with forward_hooks(model, {name: hook}), eval_mode(model), torch.enable_grad():
        y = first_tensor("", model(xi))
        if not y.requires_grad:
            return True
        (g,) = torch.autograd.grad(y.float().sum(), xi, allow_unused=True)
    return g is None or not bool(torch.any(g != 0))
