"""Architecture signatures: the DPIAT block standardization of a module tree.

A signature is the JSON-able skeleton of a network that the matching and the similarity need:
a top-level sequence whose elements are single layers or *blocks* (flat lists of layers), each
layer holding its class, its score class ("kind") and its weight shape. It is computed once
per architecture from the module alone (no forward pass, no data) and then compared without
torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from .._errors import InvalidArgumentError, SignatureError

__all__ = [
    "PAPER_LEAF_CLASSES",
    "ArchSignature",
    "Element",
    "LayerSig",
    "LayersMode",
    "signature",
]

LayersMode = Literal["paper", "extended"]
#: The two layer modes, the default first (see :func:`signature`).
LAYER_MODES: tuple[LayersMode, ...] = ("extended", "paper")
_MODES = LAYER_MODES

#: The layer classes DPIAT matches, in the authors' order. The first class both modules are
#: instances of decides whether two layers can be compared at all (Eq. 1).
PAPER_LEAF_CLASSES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Linear,
)
#: Layers that count as "dimensional" (conv, conv-transpose, linear) in the block rule.
_DIM_CLASSES: tuple[type[nn.Module], ...] = tuple(
    c for c in PAPER_LEAF_CLASSES if not issubclass(c, nn.modules.batchnorm._BatchNorm)
)
_PARAMS_PREFIX = "Params:"
_FORMAT = "nas-warmstart/arch-signature"
_VERSION = 1


def is_matchable(kind: str | None, shape: tuple[int, ...] | None) -> bool:
    """The one rule for a layer that can score above zero: a kind and a shape without zeros."""
    return kind is not None and shape is not None and all(s > 0 for s in shape)


@dataclass(frozen=True)
class LayerSig:
    """One layer of a standardized network.

    Attributes:
        name: qualified module name in the model (``""`` for the root).
        cls: the module's class name (``"BatchNormAct2d"``).
        kind: the score class: a name from :data:`PAPER_LEAF_CLASSES` (``"BatchNorm2d"``), in
            ``"extended"`` mode also a parameter-holding class the paper ignores
            (``"LayerNorm"``, ``"Params:VisionTransformer"``); ``None`` for layers that never
            match (activations, pooling, ...).
        shape: the weight shape Eq. 1 compares (``None`` when there is no weight).
        params: names of the module's own parameters that a transfer may write.
        dim: whether the layer is a conv/conv-transpose/linear (the block rule counts these).
    """

    name: str
    cls: str
    kind: str | None
    shape: tuple[int, ...] | None
    params: tuple[str, ...] = ()
    dim: bool = False

    @property
    def key(self) -> tuple[str | None, tuple[int, ...] | None]:
        """What the score depends on: the kind and the weight shape."""
        return (self.kind, self.shape)

    @property
    def matchable(self) -> bool:
        """Whether this layer can score above zero against some layer."""
        return is_matchable(self.kind, self.shape)

    @property
    def is_params_holder(self) -> bool:
        """A container's own (bare) parameters, e.g. a ViT's ``pos_embed``/``cls_token``."""
        return self.kind is not None and self.kind.startswith(_PARAMS_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cls": self.cls,
            "kind": self.kind,
            "shape": list(self.shape) if self.shape is not None else None,
            "params": list(self.params),
            "dim": self.dim,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSig:
        try:
            shape = d["shape"]
            return cls(
                name=str(d["name"]),
                cls=str(d["cls"]),
                kind=None if d["kind"] is None else str(d["kind"]),
                shape=None if shape is None else tuple(int(s) for s in shape),
                params=tuple(str(p) for p in d.get("params", ())),
                dim=bool(d.get("dim", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SignatureError(
                f"malformed layer entry {d!r} in a signature ({e}); "
                "signatures must come from ArchSignature.to_json()"
            ) from None


#: A top-level element: a single layer, or a block (tuple of layers).
Element = LayerSig | tuple[LayerSig, ...]


@dataclass(frozen=True)
class ArchSignature:
    """Standardized architecture of a network (DPIAT, Czyzewski et al. 2022, App. A.1).

    Two models of the same architecture have equal signatures. ``key`` drops the module
    names and is what similarity caches are keyed on.

    Attributes:
        elements: the top-level sequence; each element is a :class:`LayerSig` or a block
            (a tuple of :class:`LayerSig`).
        layers: ``"paper"`` (only conv/BN/linear can match, as the authors) or ``"extended"``
            (also LayerNorm, GroupNorm, Embedding, layer-scale and bare parameters).
    """

    elements: tuple[Element, ...]
    layers: LayersMode = "extended"
    _key: tuple[Any, ...] = field(init=False, repr=False, compare=False, hash=False)
    _num_matchable: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.layers not in _MODES:
            raise InvalidArgumentError(
                f"layers must be one of {_MODES}, got {self.layers!r}"
            )
        key = tuple(
            ("B", tuple(layer.key for layer in e)) if isinstance(e, tuple) else e.key
            for e in self.elements
        )
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_num_matchable", sum(x.matchable for x in self.layers_flat()))

    @property
    def key(self) -> tuple[Any, ...]:
        """Name-free structure: equal for equal architectures, hashable."""
        return self._key

    def __len__(self) -> int:
        return len(self.elements)

    def __hash__(self) -> int:
        return hash((self._key, self.layers))

    def layers_flat(self) -> Iterator[LayerSig]:
        """Every layer in order, blocks expanded."""
        for e in self.elements:
            if isinstance(e, tuple):
                yield from e
            else:
                yield e

    @property
    def num_blocks(self) -> int:
        return sum(isinstance(e, tuple) for e in self.elements)

    @property
    def num_matchable(self) -> int:
        """Number of layers that can be matched; equals D(X→X), the self-match score."""
        return self._num_matchable

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "layers": self.layers,
            "elements": [
                {"block": [layer.to_dict() for layer in e]} if isinstance(e, tuple) else e.to_dict()
                for e in self.elements
            ],
        }

    def to_json(self) -> str:
        """Compact JSON text; :meth:`from_json` restores an equal signature."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Any) -> ArchSignature:
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise SignatureError(
                f"not an architecture signature: expected a dict with format {_FORMAT!r}; "
                "create one with nas_warmstart.dpiat.signature(model).to_json()"
            )
        if d.get("version") != _VERSION:
            raise SignatureError(
                f"signature version {d.get('version')!r} is not supported (this release reads "
                f"version {_VERSION}); recompute it with nas_warmstart.dpiat.signature(model)"
            )
        elements: list[Element] = []
        for e in d.get("elements", []):
            if isinstance(e, dict) and "block" in e:
                elements.append(tuple(LayerSig.from_dict(x) for x in e["block"]))
            else:
                elements.append(LayerSig.from_dict(e))
        return cls(elements=tuple(elements), layers=d.get("layers", "extended"))

    @classmethod
    def from_json(cls, text: str) -> ArchSignature:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SignatureError(f"signature JSON does not parse: {e}") from None
        return cls.from_dict(d)

    def describe(self) -> str:
        """A short human-readable summary."""
        return (
            f"ArchSignature({len(self)} top-level elements, {self.num_blocks} blocks, "
            f"{self.num_matchable} matchable layers, layers={self.layers!r})"
        )


def _paper_kind(module: nn.Module) -> str | None:
    for c in PAPER_LEAF_CLASSES:
        if isinstance(module, c):
            return c.__name__
    return None


def _weight_shape(module: nn.Module, name: str) -> tuple[int, ...] | None:
    w = getattr(module, "weight", None)
    if w is None:
        return None
    if isinstance(w, nn.parameter.UninitializedParameter):
        raise InvalidArgumentError(
            f"module {name or '<root>'} ({type(module).__name__}) is a lazy module whose weight "
            "is not initialised yet; run one forward pass before computing its signature"
        )
    return tuple(int(s) for s in w.shape)


def _direct_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters(recurse=False) if p is not None]


def _leaf(module: nn.Module, name: str, kind: str) -> LayerSig:
    params = tuple(n for n, _ in _direct_params(module))
    return LayerSig(
        name=name,
        cls=type(module).__name__,
        kind=kind,
        shape=_weight_shape(module, name),
        params=params,
        dim=isinstance(module, _DIM_CLASSES),
    )


def _childless(module: nn.Module, name: str, mode: str) -> LayerSig:
    """A non-leaf module without children: kept as a (usually zero-score) element."""
    params = _direct_params(module)
    if mode == "extended" and params:
        names = tuple(n for n, _ in params)
        w = dict(params).get("weight", params[0][1])
        if isinstance(w, nn.parameter.UninitializedParameter):
            raise InvalidArgumentError(
                f"module {name or '<root>'} is lazy and not initialised; run one forward pass first"
            )
        return LayerSig(name, type(module).__name__, type(module).__name__, tuple(w.shape), names)
    return LayerSig(name, type(module).__name__, None, None, ())


def _params_holder(module: nn.Module, name: str) -> LayerSig | None:
    """In extended mode: a container's own parameters as one pseudo-layer."""
    params = _direct_params(module)
    if not params:
        return None
    cls = type(module).__name__
    return LayerSig(
        name, cls, _PARAMS_PREFIX + cls, tuple(params[0][1].shape), tuple(n for n, _ in params)
    )


def _std(module: nn.Module, name: str, level: int, mode: str) -> tuple[int, int, Any]:
    """Returns (depth, number of conv/linear layers, content); content is a LayerSig or a list.

    Follows the authors' block rule exactly (see docs/dpiat.md): children in registration
    order, single-child wrappers do not deepen the level, a node with more single layers than
    blocks becomes one flat block (except the root), groups with < 2 conv/linear layers are
    spliced into the parent, singletons are unwrapped.
    """
    kind = _paper_kind(module)
    if kind is not None:
        leaf = _leaf(module, name, kind)
        content: Any = [leaf] if level == 0 else leaf
        return 0, int(leaf.dim), content

    kids = list(module.named_children())
    items: list[Any] = []
    n_blocks = n_single = n_dim = 0
    if mode == "extended" and kids:
        holder = _params_holder(module, name)
        if holder is not None:
            items.append(holder)
            n_single += 1
    next_level = level if len(kids) == 1 else level + 1
    for child_name, child in kids:
        qual = f"{name}.{child_name}" if name else child_name
        c_depth, c_dim, c = _std(child, qual, next_level, mode)
        n_dim += c_dim
        if c_depth > 1 or (isinstance(c, list) and c_dim < 2):
            for e in c:
                items.append(e)
                if isinstance(e, list):
                    n_blocks += 1
                else:
                    n_single += 1
        else:
            items.append(c)
            if isinstance(c, list):
                n_blocks += 1
            else:
                n_single += 1

    if n_single > n_blocks and level > 0:
        flat: list[Any] = []
        for e in items:
            if isinstance(e, list):
                flat.extend(e)
            else:
                flat.append(e)
        items, depth = flat, 1
    else:
        depth = 2
    content = items
    if len(items) == 1:
        content, depth = items[0], 1
    elif not items:
        content, depth = _childless(module, name, mode), 0
    if level == 0 and not isinstance(content, list):
        content = [content]
    return depth, n_dim, content


def signature(model: nn.Module, *, layers: LayersMode = "extended") -> ArchSignature:
    """Standardize a model into its :class:`ArchSignature`.

    Args:
        model: any ``torch.nn.Module``; only its structure and parameter shapes are read.
        layers: ``"paper"`` matches only conv/conv-transpose/batch-norm/linear layers exactly
            as the DPIAT authors; ``"extended"`` (default) also makes LayerNorm, GroupNorm,
            Embedding, layer-scale and containers' bare parameters (ViT ``pos_embed``,
            ``cls_token``, attention ``in_proj_weight``) matchable. For networks made only of
            the paper's layers both modes give the same signature.

    Returns:
        The signature; ``signature(m).to_json()`` is what a pool stores.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"signature() needs a torch.nn.Module, got {type(model).__name__}; build the model "
            "first (e.g. timm.create_model(name, pretrained=False))"
        )
    if layers not in _MODES:
        raise InvalidArgumentError(f"layers must be one of {_MODES}, got {layers!r}")
    stored = getattr(type(model), "__nw_signature__", None)
    if stored is not None:  # a StoredNetwork: the signature of the module it was stored from
        sig: ArchSignature = stored(model, layers)
        return sig
    content = _std(model, "", 0, layers)[2]
    elements = tuple(tuple(e) if isinstance(e, list) else e for e in content)
    return ArchSignature(elements=elements, layers=layers)
