"""How to rebuild a network: a timm model name + kwargs, a search space + config, or a
registered builder + its parameters.

A pool entry stores an :class:`ArchSpec` next to its weights so that the module can be rebuilt
in another process or on another machine. An entry never names an import path or a pickled
object, so opening a pool cannot run code a stranger wrote: a ``builder`` spec names a function
that the reading process itself registered (:func:`nas_warmstart.register_builder`).

A spec read from a pool may have been written by someone else, so what it can ask of timm is
limited by an allow-list (:func:`check_timm_config`): architecture arguments only. Nothing in a
stored spec can name a file to load, a URL or hub to download from, or a function or class to
import, and the classifier and input sizes are bounded, so rebuilding a stranger's entry can
neither run their code nor exhaust memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .._args import check_int
from .._errors import InvalidArgumentError, fix

__all__ = [
    "MAX_CLASSES", "MAX_IN_CHANS", "ArchSpec", "SpecKind", "as_optional_spec", "as_spec", "check_timm_config",
    "spec_from_json", "spec_json",
]

SpecKind = Literal["timm", "space", "builder"]
_KINDS = ("timm", "space", "builder")
#: Keys an export's ``spec.json`` adds to a spec's dict (see :meth:`ArchSpec.from_dict`).
_EXPORT_KEYS = ("image_size", "preprocessing")

#: Largest classifier a spec may ask for (ImageNet-21k has 21,843 classes); a stored spec with
#: two billion classes would otherwise allocate a head of billions of parameters.
MAX_CLASSES = 1_000_000
#: Largest number of input channels a spec may ask for.
MAX_IN_CHANS = 4096

# timm's create_model / build_model_with_cfg arguments that load or download weights, or hand
# timm a function or class; a pool spec never needs them (its weights come from the pool).
_TIMM_LOADER_KEYS = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "pretrained_filter_fn",
    "checkpoint_path", "cache_dir", "feature_cfg", "feature_cls", "kwargs_filter",
})
# Argument names that name a file, folder, URL, hub repository, or a callable/class to use.
_TIMM_DENIED_KEY = re.compile(
    r"(^|_)(path|paths|file|files|filename|dir|url|uri|hub|checkpoint|ckpt|fn|func|cls|class|module|import)($|_)"
)
_TIMM_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# String values are names of things timm looks up in its own tables ("gelu", "avg",
# "layernorm2d"): no separators, so no string can be a path, a URL or a dotted import path.
_TIMM_STR = re.compile(r"[A-Za-z0-9_-]{0,64}")


def check_timm_config(name: str, config: Mapping[str, Any]) -> None:
    """Refuse timm keyword arguments that are not plain architecture arguments.

    The rule (an allow-list): keys are lower-case identifiers that do not name a file, folder,
    URL, hub, checkpoint, function or class (``checkpoint_path``, ``pretrained*``, ``*_path``,
    ``*_file``, ``*_dir``, ``*_url``, ``*_fn``, ``*_cls`` ...); values are numbers, booleans,
    null, short names of letters, digits, ``_`` and ``-`` (``"gelu"``, ``"avg"``), or lists and
    dicts of those.

    Raises:
        InvalidArgumentError: naming the first key or value that breaks the rule.
    """
    for key, value in config.items():
        if not isinstance(key, str) or not _TIMM_KEY.fullmatch(key) or key in _TIMM_LOADER_KEYS \
                or key.startswith("pretrained") or _TIMM_DENIED_KEY.search(key):
            raise InvalidArgumentError(
                f"timm spec {name!r}: argument {key!r:.80} is not allowed (a spec holds architecture "
                "arguments only, never a file, URL, hub, function or class: no checkpoint_path, "
                "pretrained*, *_path, *_file, *_dir, *_url, *_fn, *_cls); remove it, and import a "
                "checkpoint with "
                + fix("LocalPool.add_timm(name, checkpoint_path)", "`nas-warmstart pool add DIR timm:<name> --checkpoint FILE`")
            )
        _check_timm_value(name, key, value)


def _check_timm_value(name: str, key: str, value: Any) -> None:
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if _TIMM_STR.fullmatch(value):
            return
        raise InvalidArgumentError(
            f"timm spec {name!r}: argument {key}={value!r:.80} is not allowed (string values "
            "are short names of letters, digits, '_' and '-', e.g. 'gelu' or 'avg', never a "
            "path, a URL or an import path); use the name timm knows the layer by"
        )
    if isinstance(value, list):
        for v in value:
            _check_timm_value(name, key, v)
        return
    if isinstance(value, dict):
        check_timm_config(name, value)
        return
    raise InvalidArgumentError(  # pragma: no cover - configs are plain JSON by now
        f"timm spec {name!r}: argument {key} holds a {type(value).__name__}; use plain JSON values"
    )


def _plain_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON data (tuples become lists); refuses NaN/inf and objects."""
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what} must be plain JSON data (numbers, strings, bools, lists, dicts) without "
            f"NaN/inf, got {value!r:.120} ({e}); pass class names as strings, not classes"
        ) from None
    return json.loads(text)


@dataclass(frozen=True, eq=True)
class ArchSpec:
    """A network's recipe, stored as plain JSON.

    Attributes:
        kind: ``"timm"`` (``timm.create_model(name, pretrained=False, **config)``),
            ``"space"`` (``search_spaces.get_space(name).build(config, ...)``) or ``"builder"``
            (the function registered as ``name`` with :func:`nas_warmstart.register_builder`,
            called with ``optuna.trial.FixedTrial(config)`` or ``**config``).
        name: the timm model name, the search-space name or the builder name.
        config: timm keyword arguments, the search-space config, or the builder's parameters.
        num_classes: classifier size (timm and space specs; default 1000). None for builder
            specs, whose own parameters decide it.
        in_chans: input channels (timm and space specs; default 3). None for builder specs.
    """

    kind: SpecKind
    name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    in_chans: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidArgumentError(
                f"spec kind must be one of {_KINDS}, got {self.kind!r}; use ArchSpec.timm(...), "
                "ArchSpec.space(...) or ArchSpec.builder(...)"
            )
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"spec name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.config, Mapping):
            raise InvalidArgumentError(
                f"spec config must be a dict of plain values, got {type(self.config).__name__}"
            )
        config = _plain_json(dict(self.config), f"the config of spec {self.kind}:{self.name}")
        if self.kind == "builder":
            for field_name in ("num_classes", "in_chans"):
                if getattr(self, field_name) is not None:
                    raise InvalidArgumentError(
                        f"a builder spec takes no {field_name} (got {getattr(self, field_name)!r}): "
                        f"the builder's parameters decide it; put it in the params if the builder "
                        f"takes it, e.g. ArchSpec.builder({self.name!r}, {{{field_name!r}: ...}})"
                    )
            object.__setattr__(self, "config", config)
            return
        for field_name, default in (("num_classes", 1000), ("in_chans", 3)):
            v = getattr(self, field_name)
            if v is None:
                object.__setattr__(self, field_name, default)
            else:
                check_int(f"spec {field_name}", v, min=1,
                          max=MAX_CLASSES if field_name == "num_classes" else MAX_IN_CHANS)
        for reserved in ("num_classes", "in_chans"):
            if reserved in config:
                raise InvalidArgumentError(
                    f"spec config must not hold {reserved!r} (got {config[reserved]!r}); pass it as "
                    f"ArchSpec(..., {reserved}=...)"
                )
        if "pretrained" in config:
            raise InvalidArgumentError(
                "spec config must not hold 'pretrained': pool models are always built with "
                "pretrained=False and get their weights from the pool or a local checkpoint"
            )
        if self.kind == "timm":
            check_timm_config(self.name, config)
        object.__setattr__(self, "config", config)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def timm(cls, name: str, *, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ArchSpec:
        """A timm architecture: ``timm.create_model(name, pretrained=False, **kwargs)``."""
        return cls("timm", name, kwargs, num_classes=num_classes, in_chans=in_chans)

    @classmethod
    def space(
        cls, name: str, config: Mapping[str, Any], *, num_classes: int = 1000, in_chans: int = 3
    ) -> ArchSpec:
        """A search-space architecture: ``get_space(name).build(config, ...)``."""
        return cls("space", name, config, num_classes=num_classes, in_chans=in_chans)

    @classmethod
    def builder(cls, name: str, params: Mapping[str, Any] | None = None) -> ArchSpec:
        """A registered builder's architecture: the builder ``name`` replayed with ``params``.

        A trial builder (``define_model(trial)``) is called with
        ``optuna.trial.FixedTrial(params)``, so ``params`` are the trial's parameters
        (``trial.params``; extra ones are ignored); a keyword builder with ``**params``.
        """
        return cls("builder", name, dict(params or {}))

    @classmethod
    def parse(cls, ref: str, *, num_classes: int = 1000, in_chans: int = 3) -> ArchSpec:
        """Read ``timm:<name>``, ``timm:<name>:<json kwargs>``, ``space:<name>:<json config>``
        or ``builder:<name>:<json params>``.

        ``num_classes``/``in_chans`` apply to timm and space references unless the JSON part
        sets them.
        """
        kind, sep, rest = ref.partition(":")
        name, sep2, payload = rest.partition(":")
        if not sep or kind not in _KINDS or not name:
            raise InvalidArgumentError(
                f"architecture reference {ref!r} is not understood; use timm:<name> "
                "(e.g. timm:resnet18), timm:<name>:<json kwargs>, space:<name>:<json config> or "
                "builder:<name>:<json params>"
            )
        config: dict[str, Any] = {}
        if sep2:
            try:
                config = json.loads(payload)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(
                    f"the JSON part of {ref!r} does not parse ({e}); quote it for the shell, e.g. "
                    "'space:mlp:{\"depth\": 4}'"
                ) from None
            if not isinstance(config, dict):
                raise InvalidArgumentError(f"the JSON part of {ref!r} must be an object, got {config!r}")
        elif kind == "space":
            raise InvalidArgumentError(f"{ref!r} needs a config: space:<name>:<json config>")
        if kind == "builder":
            return cls.builder(name, config)
        num_classes = config.pop("num_classes", num_classes)
        in_chans = config.pop("in_chans", in_chans)
        return cls(kind, name, config, num_classes=num_classes, in_chans=in_chans)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "config": dict(self.config)}
        if self.kind != "builder":
            d.update(num_classes=self.num_classes, in_chans=self.in_chans)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchSpec:
        """The spec of :meth:`to_dict`'s dict, or of an export's ``spec.json`` as it is.

        An export's ``spec.json`` (:func:`nas_warmstart.export.export_model`) is this dict plus
        what feeding the network needs (``image_size``, ``preprocessing``, and, for a builder
        spec, the ``in_chans`` and ``num_classes`` its builder decided): those keys are not the
        spec's and are left out, so ``ArchSpec.from_dict(json.load(open("spec.json")))`` works.
        """
        if not isinstance(d, Mapping) or "kind" not in d or "name" not in d:
            raise InvalidArgumentError(
                f"an architecture spec needs 'kind' and 'name', got {d!r:.120}; build one with "
                "ArchSpec.timm(name, ...) or ArchSpec.space(name, config, ...)"
            )
        if "image_size" in d:  # an export's spec.json (image_size is never a spec field)
            drop = {*_EXPORT_KEYS, *(("num_classes", "in_chans") if d["kind"] == "builder" else ())}
            d = {k: v for k, v in d.items() if k not in drop}
        extra = set(d) - {"kind", "name", "config", "num_classes", "in_chans"}
        if extra:
            raise InvalidArgumentError(f"unknown architecture spec fields {sorted(extra)}")
        return cls(
            d["kind"], d["name"], d.get("config", {}),
            num_classes=d.get("num_classes"), in_chans=d.get("in_chans"),
        )

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    def to_ref(self) -> str:
        """The shell form accepted by :meth:`parse` (and by the ``nas-warmstart`` command)."""
        if self.kind == "builder":
            return f"builder:{self.name}:{json.dumps(dict(self.config), sort_keys=True, separators=(',', ':'))}"
        extra = {**self.config, "num_classes": self.num_classes, "in_chans": self.in_chans}
        return f"{self.kind}:{self.name}:{json.dumps(extra, sort_keys=True, separators=(',', ':'))}"

    def __str__(self) -> str:
        cfg = json.dumps(dict(self.config), sort_keys=True, separators=(",", ":"))
        return f"{self.kind}:{self.name}" + (f":{cfg}" if self.config else "")

    # ------------------------------------------------------------------ building

    def build(self, *, device: str | torch.device | None = None) -> nn.Module:
        """Build the module with freshly initialised weights.

        Args:
            device: where to allocate parameters; ``"meta"`` builds the structure only (fast,
                no memory), which is enough for :func:`nas_warmstart.dpiat.signature`.
        """
        if self.kind == "builder":
            from .builders import get_builder

            return get_builder(self.name).replay(self.config, device=device)[0]
        ctx = torch.device(device) if device is not None else nullcontext()
        if self.kind == "timm":
            import timm

            if not timm.is_model(self.name):
                stem = self.name.split("_")[0]
                close = timm.list_models(f"*{stem}*")[:5]
                raise InvalidArgumentError(
                    f"timm has no model {self.name!r}"
                    + (f"; similar names: {', '.join(close)}" if close else "; see timm.list_models()")
                )
            try:
                with ctx:
                    return timm.create_model(
                        self.name, pretrained=False, num_classes=self.num_classes,
                        in_chans=self.in_chans, **self.config,
                    )
            except (TypeError, ValueError, AssertionError, KeyError) as e:
                raise InvalidArgumentError(
                    f"timm could not build {self.name!r} with kwargs {dict(self.config)}: "
                    f"{type(e).__name__}{': ' + str(e) if str(e) else ' (the kwargs violate a rule of this model)'}"
                ) from None
        from .._plugins import search_spaces

        space = search_spaces().get_space(self.name)
        try:
            with ctx:
                assert self.num_classes is not None and self.in_chans is not None  # set for space specs
                model = space.build(dict(self.config), num_classes=self.num_classes, in_chans=self.in_chans)
        except (TypeError, ValueError, KeyError) as e:
            if isinstance(e, InvalidArgumentError):
                raise
            raise InvalidArgumentError(
                f"search space {self.name!r} could not build config {dict(self.config)}: "
                f"{type(e).__name__}: {e}"
            ) from None
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"search space {self.name!r} built a {type(model).__name__}, not a torch.nn.Module"
            )
        return model


def spec_from_json(text: str | None) -> ArchSpec | None:
    """A stored spec column/record: JSON of an ArchSpec, or null for an entry without one."""
    d = json.loads(text) if text else None
    return None if d is None else ArchSpec.from_dict(d)


def spec_json(spec: ArchSpec | None) -> str:
    return "null" if spec is None else spec.to_json()


def as_spec(spec: Any) -> ArchSpec:
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, str):
        return ArchSpec.parse(spec)
    if isinstance(spec, Mapping):
        return ArchSpec.from_dict(spec)
    raise InvalidArgumentError(
        f"spec must be an ArchSpec, a reference such as 'timm:resnet18' or a spec dict, got "
        f"{type(spec).__name__}; e.g. ArchSpec.timm('resnet18', num_classes=10), or "
        "ArchSpec.builder(name, trial.params) for a function registered with register_builder"
    )


def as_optional_spec(spec: Any) -> ArchSpec | None:
    return None if spec is None else as_spec(spec)
