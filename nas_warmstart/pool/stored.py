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

from .._errors import (
    InvalidArgumentError,
    NoBuilderError,
    NoMatchableLayersError,
    SignatureError,
    fix,
)
from ..dpiat.signature import LAYER_MODES as _MODES
from ..dpiat.signature import ArchSignature, LayersMode, signature
from .spec import ArchSpec
from .weights_io import SOURCE_META_KEY, load_into, state_shapes

__all__ = [
    "SOURCE_META_KEY", "StoredNetwork", "build_loaded", "check_spec_rebuilds", "describe_source",
    "no_builder_fix", "source_from",
]

_VERSION = 1
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
    except (json.JSONDecodeError, RecursionError):  # written by anyone: malformed means absent
        return None
    return d if isinstance(d, dict) else None


def no_builder_fix(entry: str) -> str:
    """How to give a pool entry without a builder one (for NoBuilderError messages)."""
    return (
        "To rebuild it, register the function that builds it, "
        "nas_warmstart.register_builder('my-model', fn), and give the entry its spec: "
        + fix(f"zoo.set_spec({entry!r}, ArchSpec.builder('my-model', params))",
              f"in Python, zoo.set_spec({entry!r}, ArchSpec.builder('my-model', params))")
        + "; or build the module yourself and load zoo.load_state_dict(name) into it"
    )


def check_spec_rebuilds(
    spec: ArchSpec, model: nn.Module | Mapping[str, torch.Tensor], *, what: str = "this model"
) -> None:
    """Raise unless ``spec`` builds a module with the state-dict names and shapes of ``model``
    (a module or a state dict).

    Built on the meta device, so it is cheap; a pool checks this before storing, so that
    loading the entry later cannot fail.
    """
    rebuilt = state_shapes(spec.build(device="meta"))
    own = state_shapes(model) if isinstance(model, nn.Module) else {k: tuple(v.shape) for k, v in model.items()}
    if rebuilt != own:
        diff = sorted(set(rebuilt.items()) ^ set(own.items()))
        raise InvalidArgumentError(
            f"spec {spec} does not rebuild {what}: state dicts differ in "
            f"{len(diff)} entries (first {diff[0][0]!r}: spec {rebuilt.get(diff[0][0])} vs "
            f"model {own.get(diff[0][0])}); pass the spec the model was built from, with "
            "the same num_classes/in_chans (timm, space) or parameters (builder)"
        )


def build_loaded(
    name: str, spec: ArchSpec | None, state: Mapping[str, torch.Tensor], *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild a pool entry's module from its spec and load its weights (strict)."""
    if spec is None:
        raise NoBuilderError(
            f"pool entry {name!r} has no builder: it was added without a spec, so it holds its "
            "signature and tensors (enough to rank it and to transfer from it) but no way to "
            f"rebuild the module. {no_builder_fix(name)}"
        )
    try:
        model = spec.build()
    except NoBuilderError as e:
        raise NoBuilderError(f"pool entry {name!r} is built by {spec}: {e}") from None
    load_into(model, state, what=f"the weights of pool entry {name!r}")
    return model.to(device)


def source_from(
    name: str, spec: ArchSpec | None, state: Mapping[str, torch.Tensor], meta: Mapping[str, str],
    *, device: str | torch.device = "cpu",
) -> nn.Module:
    """A pool entry as a transfer source: its module if it can be built here, else stored."""
    desc = read_description(meta)
    if spec is not None:
        try:
            return build_loaded(name, spec, state, device=device)
        except NoBuilderError:
            if desc is None:
                raise
    if desc is None:
        raise NoBuilderError(
            f"pool entry {name!r} has no builder and its weights file holds no stored signature "
            "(it was written by an older release), so it cannot be a transfer source; "
            f"{no_builder_fix(name)}"
        )
    return StoredNetwork(state, desc, name=name, fix=no_builder_fix(name)).to(device)
