"""Activation capture: record named modules' outputs during a forward pass, and where to hook."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .._errors import InvalidArgumentError

__all__ = ["Captured", "ForwardHook", "capture", "default_layers", "forward_hooks", "paper_layers"]

#: a forward hook, as ``nn.Module.register_forward_hook`` takes it: ``(module, args, output)``;
#: a return value other than None replaces the module's output.
ForwardHook = Callable[[nn.Module, Any, Any], Any]


@dataclass
class Captured:
    """Outputs recorded by :func:`capture`.

    Attributes:
        names: the hooked module names, in the order given.
        outputs: module name -> output tensor of the **last** call of that module during the
            ``with`` block (a module called twice keeps its second output). Tuple/list outputs
            keep element 0; a ``PackedSequence`` is padded to (batch, time, ...). A module that
            was never called has no entry.
        calls: module name -> how many times it ran inside the ``with`` block.
    """

    names: tuple[str, ...]
    outputs: dict[str, Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)


def _close_names(model: nn.Module, name: str) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    return difflib.get_close_matches(name, names, n=5, cutoff=0.5)


def get_module(model: nn.Module, name: str, *, role: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that suggests close names."""
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"module names must be strings (qualified names from named_modules()), got "
            f"{type(name).__name__} {name!r} for the {role}"
        )
    try:
        return model.get_submodule(name)
    except AttributeError:
        close = _close_names(model, name)
        hint = f"close names: {close}" if close else "see [n for n, _ in model.named_modules()]"
        raise InvalidArgumentError(
            f"the {role} ({type(model).__name__}) has no submodule {name!r}; names are qualified "
            f"names from named_modules(); {hint}"
        ) from None


def as_name_list(names: str | Sequence[str]) -> list[str]:
    if isinstance(names, str):
        return [names]
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def first_tensor(name: str, output: Any) -> Tensor:
    """The tensor to record from a module output (tuple element 0, PackedSequence padded)."""
    if isinstance(output, PackedSequence):
        return pad_packed_sequence(output, batch_first=True)[0]
    if isinstance(output, tuple | list):
        if not output:
            raise InvalidArgumentError(f"module {name!r} returned an empty {type(output).__name__}")
        return first_tensor(name, output[0])
    if isinstance(output, Tensor):
        return output
    raise InvalidArgumentError(
        f"cannot capture module {name!r}: its output is a {type(output).__name__}, not a tensor, "
        "a tuple/list whose first element is a tensor, or a PackedSequence; hook a submodule "
        "that returns a tensor instead"
    )


@contextlib.contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, ForwardHook], *, role: str = "model") -> Iterator[None]:
    """Register forward hooks on named submodules for the duration of the block.

    Example::

        with forward_hooks(model, {"layer1": lambda m, a, out: out.detach()}):
            y = model(x)                        # layer1's output is detached inside the block

    The hooks are registered in the order of ``hooks`` and all removed when the block exits,
    also when it raises (a hook may raise to end a forward pass early) or when a later name
    cannot be resolved.

    Args:
        model: the network to hook.
        hooks: qualified module name (``""``: the model itself) -> hook.
        role: what ``model`` is, for the error on an unknown name (``"guide"``, ``"target"``).

    Raises:
        InvalidArgumentError: a name that is not a submodule (with close names).
    """
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(get_module(model, name, role=role).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture(
    model: nn.Module, names: str | Sequence[str], *, detach: bool = False
) -> Iterator[Captured]:
    """Record the outputs of named submodules during the forward passes run inside the block.

    Example::

        with capture(model, ["layer1.0.conv1", "fc"]) as cap:
            logits = model(x)
        acts = cap.outputs["layer1.0.conv1"]       # (n, C, H, W), still in the graph

    Forward hooks are registered on ``model.get_submodule(name)`` for every name and removed
    when the block exits, also when the forward pass raises. One forward pass produces both
    the model's output and the activations (the official guidance code runs the target
    twice per step). If a module runs several times inside the block, only its last output
    is kept (``Captured.calls`` says how often it ran).

    Args:
        model: the network to hook.
        names: qualified module names (``""`` is the model itself); duplicates are ignored.
        detach: store detached outputs (for a frozen guide); the default keeps them in the
            autograd graph (for the trained target).

    Yields:
        A :class:`Captured` whose ``outputs`` fill in as the model runs.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"capture() needs a torch.nn.Module, got {type(model).__name__}")
    name_list = as_name_list(names)
    result = Captured(names=tuple(name_list))

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = first_tensor(name, output)
            result.outputs[name] = t.detach() if detach else t
            result.calls[name] = result.calls.get(name, 0) + 1

        return hook

    with forward_hooks(model, {n: make_hook(n) for n in name_list}):
        yield result


# ---------------------------------------------------------------------------- hook points

_CONV_LINEAR: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: The official code's exact-type set (guidance repository, rep_sim).
_PAPER_TYPES: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Conv2d,
        nn.Linear,
        nn.AdaptiveAvgPool2d,
        nn.LSTM,
        nn.RNN,
        nn.TransformerDecoderLayer,
        nn.LayerNorm,
        nn.MultiheadAttention,
    }
)


def _conv_linear_names(model: nn.Module) -> list[str]:
    mha_children: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            # MultiheadAttention uses out_proj's weight functionally: its forward never runs,
            # so a hook on it would never fire.
            mha_children.update(id(c) for c in m.children())
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, _CONV_LINEAR) and id(m) not in mha_children
    ]


def default_layers(model: nn.Module) -> list[str]:
    """Our default hook points: every Conv1d/2d/3d and Linear, minus the last (the classifier).

    Unlike the paper's exact-type rule, subclasses count too (timm's ``Conv2dSame``, custom
    Linear layers); the linear layers inside ``nn.MultiheadAttention`` are skipped because
    their forward never runs. Order is ``named_modules()`` (registration) order, and the last
    such module is dropped as the paper drops its last hooked output. Outputs are the raw
    conv/linear outputs: pre-norm, pre-activation, pre-residual-add, as in the paper.

    Args:
        model: the network.

    Returns:
        Qualified module names; empty when the model has fewer than two conv/linear layers.
    """
    return _conv_linear_names(model)[:-1]


def paper_layers(model: nn.Module) -> list[str]:
    """The official guidance code's hook points, for fidelity runs.

    Modules whose *exact* type is Conv2d, Linear, AdaptiveAvgPool2d, LSTM, RNN,
    TransformerDecoderLayer, LayerNorm or MultiheadAttention (subclasses do not count), minus
    the last one (assumed to be the logits layer).

    Approximation: the official code orders layers by *execution* order and drops the last
    *executed* output; this function uses ``named_modules()`` (registration) order, which is
    the same for sequential networks but can differ when modules are registered in another
    order than they run. The official code also stores each element of a tuple output as a
    separate layer; :func:`capture` keeps element 0 only.

    Args:
        model: the network.

    Returns:
        Qualified module names.
    """
    return [n for n, m in model.named_modules() if type(m) in _PAPER_TYPES][:-1]

