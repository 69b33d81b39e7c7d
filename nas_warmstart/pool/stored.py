"""A trained network known only by its architecture signature and its tensors.

DPIAT needs nothing else: ranking reads the signature, a transfer reads the signature (to
match layers) and the tensors (to copy them). So a pool can take any model, even one no
builder can recreate: it stores the model's signatures (both layer modes, with the module
and parameter names the transfer needs), the names of its parameters, the few attributes a
rule reads (a ViT's prefix-token count), and the state dict.

:class:`StoredNetwork` is what such an entry loads as: an ``nn.Module`` whose submodules are
plain holders of the stored tensors under their original names, so ``get_submodule``,
``state_dict`` and ``.to(device)`` behave as on the original, and ``signature()`` returns the
stored signature. It cannot run: ``forward`` raises :class:`~nas_warmstart.NoBuilderError`
saying how to give the entry a builder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._errors import NoBuilderError, NoMatchableLayersError, SignatureError
from ..dpiat.signature import ArchSignature, LayersMode, signature

__all__ = ["SOURCE_META_KEY", "StoredNetwork", "describe_source"]

#: safetensors metadata key of the source description (signatures, parameter names, attrs).
SOURCE_META_KEY = "nas_warmstart_source"
_VERSION = 1
_MODES: tuple[LayersMode, ...] = ("extended", "paper")
#: Module attributes that transfer rules read (the ViT position-embedding resampling).
_ATTRS = ("num_prefix_tokens", "no_embed_class")


def describe_source(model: nn.Module) -> dict[str, Any]:
    """Everything a transfer needs of ``model`` besides its tensors, as plain JSON."""
    sigs = {m: signature(model, layers=m) for m in _MODES}
    attrs: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        vals = {a: getattr(mod, a) for a in _ATTRS if isinstance(getattr(mod, a, None), (bool, int))}
        if vals:
            attrs[name] = vals
    return {
        "version": _VERSION,
        "signatures": {m: sigs[m].to_dict() for m in _MODES},
        "parameters": [n for n, _ in model.named_parameters()],
        "keys": list(model.state_dict().keys()),  # the original order (files store them sorted)
        "attrs": attrs,
    }


def check_source_only(model: nn.Module, name: str) -> None:
    """Refuse a model stored without a builder that could never be a transfer source."""
    if signature(model, layers="extended").num_matchable == 0:
        raise NoMatchableLayersError(
            f"{name!r} would be stored without a builder, which makes it a transfer source only, "
            f"but {type(model).__name__} has no layer DPIAT can match (conv, batch-norm, linear, "
            "norm or embedding layers); pass spec=... if you want to rebuild it later"
        )


class StoredNetwork(nn.Module):
    """A pool entry without a builder: its signature and tensors, enough to rank and transfer.

    Pass it to :func:`nas_warmstart.transfer` (or let :func:`nas_warmstart.warm_start` and
    ``WarmStarter`` do it) exactly like the trained module it was stored from; the copied
    tensors are the same. It cannot be run, so it cannot guide training or be converted.

    Args:
        state: the stored state dict.
        description: :func:`describe_source` of the original module.
        name: the pool entry (for messages).
        fix: how to give the entry a builder (for messages).
    """

    def __init__(self, state: Mapping[str, torch.Tensor], description: Mapping[str, Any], *,
                 name: str = "?", fix: str = "") -> None:
        super().__init__()
        if not isinstance(description, Mapping) or description.get("version") != _VERSION:
            raise SignatureError(
                f"pool entry {name!r} holds no readable source description (version "
                f"{description.get('version') if isinstance(description, Mapping) else None!r}); "
                "it was written by another release"
            )
        self._nw_name = name
        self._nw_fix = fix
        self._nw_signatures = {m: ArchSignature.from_dict(description["signatures"][m]) for m in _MODES}
        params = set(description.get("parameters", ()))
        order = [k for k in description.get("keys", ()) if k in state]
        for key in order + sorted(set(state) - set(order)):
            tensor = state[key]
            owner, _, leaf = key.rpartition(".")
            mod = self._holder(owner)
            if key in params:
                mod.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
            else:
                mod.register_buffer(leaf, tensor)
        for owner, vals in dict(description.get("attrs", {})).items():
            mod = self._holder(owner)
            for a, v in dict(vals).items():
                if a in _ATTRS:
                    object.__setattr__(mod, a, v)

    def _holder(self, path: str) -> nn.Module:
        mod: nn.Module = self
        for part in path.split(".") if path else ():
            child = mod._modules.get(part)
            if child is None:
                child = nn.Module()
                mod.add_module(part, child)
            mod = child
        return mod

    @property
    def entry_name(self) -> str:
        """The pool entry this network was loaded from."""
        return self._nw_name

    def __nw_signature__(self, layers: LayersMode) -> ArchSignature:
        return self._nw_signatures[layers]

    def _no_builder(self, what: str) -> NoBuilderError:
        return NoBuilderError(
            f"pool entry {self._nw_name!r} has no builder: it holds the network's signature and "
            f"tensors (enough to rank it and to transfer from it), not the code to run it, so it "
            f"cannot {what}. {self._nw_fix}".rstrip()
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise self._no_builder("run a forward pass (guidance and conversion need one)")

    def extra_repr(self) -> str:
        return f"entry={self._nw_name!r}, tensors={len(self.state_dict())}, no builder"


def read_description(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The source description in a weights file's safetensors metadata, if it has one."""
    text = meta.get(SOURCE_META_KEY)
    if not text:
        return None
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None
