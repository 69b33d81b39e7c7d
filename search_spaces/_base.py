"""The base class of search spaces and the pickers that turn one definition into many uses.

A space states its choices once, define-by-run, in :meth:`Space._draw`::

    def _draw(self, pick: Picker) -> None:
        n = pick.int("num_layers", 1, 3)
        for i in range(n):  # width_i exists only for i < num_layers
            pick.categorical(f"width_{i}", (32, 64, 128))

and a picker decides what each call returns: an Optuna trial's suggestion (:meth:`Space.suggest`),
a random draw (:meth:`Space.sample`) or the value read back from a config and checked
(:meth:`Space.validate`, :meth:`Space.trial_params`). So the search, the random baseline and the
validation of a stored config can never disagree about what the space is.
"""

from __future__ import annotations

import builtins
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from nas_warmstart import InvalidArgumentError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Choice", "Picker", "Space"]

#: A value a categorical parameter or a constant can take (what Optuna can store).
Choice = None | bool | int | float | str


class Picker(Protocol):
    """What :meth:`Space._draw` calls to obtain each value; every call returns the value."""

    def categorical(self, name: str, choices: Sequence[Choice]) -> Any:
        """One of ``choices`` (an Optuna categorical parameter called ``name``)."""
        ...

    def int(self, name: str, low: builtins.int, high: builtins.int, *, step: builtins.int = 1,
            log: bool = False) -> builtins.int:
        """An integer in ``[low, high]`` on the grid ``low + k * step`` (an Optuna int parameter)."""
        ...

    def const(self, name: str, value: Choice) -> Any:
        """A fixed value stored in the config but never searched (not an Optuna parameter)."""
        ...


def _kind(value: Any) -> str:
    """Type family used to compare values: ``True`` must never pass for the int ``1``."""
    if value is None:
        return "none"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "str"
    return "other"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and _kind(value) == "number"


def _plain(value: Any) -> Choice:
    """``value`` as a plain Python scalar (numpy scalars become bool/int/float)."""
    kind = _kind(value)
    if kind == "bool":
        return bool(value)
    if kind == "number":
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    return value


class _BasePicker:
    """Records every value drawn, in order, and checks the space's own definition."""

    def __init__(self, space: str) -> None:
        self.space = space
        self.values: dict[str, Any] = {}  # everything drawn, constants included, in draw order
        self.params: dict[str, Any] = {}  # the Optuna parameters only
        self.dists: dict[str, tuple[Any, ...]] = {}  # name -> ("categorical", choices) | ("int", ...)

    # -- definition checks (these catch bugs in a space's _draw, not in a user's config)

    def _fresh(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"search space {self.space!r}: parameter names must be non-empty strings, got {name!r}"
            )
        if name in self.values:
            raise InvalidArgumentError(
                f"search space {self.space!r} draws {name!r} twice in one config; give each "
                "parameter its own name (e.g. width_0, width_1)"
            )

    def _checked_choices(self, name: str, choices: Sequence[Choice]) -> tuple[Choice, ...]:
        if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
            raise InvalidArgumentError(
                f"search space {self.space!r}: the choices of {name!r} must be a non-empty list, "
                f"got {choices!r}"
            )
        out = tuple(_plain(c) for c in choices)
        for c in out:
            if _kind(c) == "other" or (isinstance(c, float) and not math.isfinite(c)):
                raise InvalidArgumentError(
                    f"search space {self.space!r}: the choices of {name!r} must be None, bool, "
                    f"int, finite float or str (what Optuna stores), got {c!r}"
                )
        if len({(_kind(c), c) for c in out}) != len(out):
            raise InvalidArgumentError(
                f"search space {self.space!r}: the choices of {name!r} repeat a value: {list(out)}"
            )
        return out

    def _check_int_range(self, name: str, low: int, high: int, step: int, log: bool) -> None:
        if not (_is_int(low) and _is_int(high) and _is_int(step)) or step < 1 or low > high:
            raise InvalidArgumentError(
                f"search space {self.space!r}: int parameter {name!r} needs integers low <= high "
                f"and step >= 1, got low={low!r}, high={high!r}, step={step!r}"
            )
        if log and (step != 1 or low < 1):
            raise InvalidArgumentError(
                f"search space {self.space!r}: int parameter {name!r} with log=True needs step=1 "
                f"and low >= 1 (Optuna's rule), got low={low}, step={step}"
            )

    # -- the Picker protocol

    def categorical(self, name: str, choices: Sequence[Choice]) -> Any:
        self._fresh(name)
        options = self._checked_choices(name, choices)
        value = self._categorical(name, options)
        self.values[name] = self.params[name] = value
        self.dists[name] = ("categorical", options)
        return value

    def int(self, name: str, low: builtins.int, high: builtins.int, *, step: builtins.int = 1,
            log: bool = False) -> builtins.int:
        self._fresh(name)
        self._check_int_range(name, low, high, step, log)
        value = self._int(name, low, high, step, log)
        self.values[name] = self.params[name] = value
        self.dists[name] = ("int", low, high, step, log)
        return value

    def const(self, name: str, value: Choice) -> Any:
        self._fresh(name)
        if _kind(value) == "other":
            raise InvalidArgumentError(
                f"search space {self.space!r}: constant {name!r} must be None, bool, int, float "
                f"or str (a plain JSON value), got {value!r}"
            )
        self.values[name] = out = self._const(name, _plain(value))
        return out

    # -- what subclasses decide

    def _categorical(self, name: str, choices: tuple[Choice, ...]) -> Any:
        raise NotImplementedError

    def _int(
        self, name: str, low: builtins.int, high: builtins.int, step: builtins.int, log: bool
    ) -> builtins.int:
        raise NotImplementedError

    def _const(self, name: str, value: Choice) -> Any:
        return value


class _TrialPicker(_BasePicker):
    """Asks an Optuna trial (anything with ``suggest_categorical`` / ``suggest_int``)."""

    def __init__(self, space: str, trial: Any) -> None:
        super().__init__(space)
        self.trial = trial

    def _categorical(self, name: str, choices: tuple[Choice, ...]) -> Any:
        return _plain(self.trial.suggest_categorical(name, list(choices)))

    def _int(self, name: str, low: int, high: int, step: int, log: bool) -> int:
        return int(self.trial.suggest_int(name, low, high, step=step, log=log))


class _RandomPicker(_BasePicker):
    """Uniform over the choices / the int grid; ``log=True`` ints are uniform in log space."""

    def __init__(self, space: str, rng: np.random.Generator) -> None:
        super().__init__(space)
        self.rng = rng

    def _categorical(self, name: str, choices: tuple[Choice, ...]) -> Any:
        return choices[int(self.rng.integers(len(choices)))]

    def _int(self, name: str, low: int, high: int, step: int, log: bool) -> int:
        if log:  # step is 1 here; widen by half a unit so both ends get their share, then snap
            v = math.exp(self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))
            return min(max(round(v), low), high)
        return low + step * int(self.rng.integers((high - low) // step + 1))


class _ReplayPicker(_BasePicker):
    """Reads every value back from a config and checks it against the definition."""

    def __init__(self, space: str, config: Mapping[str, Any]) -> None:
        super().__init__(space)
        self.config = config

    def _fail(self, name: str, got: Any, allowed: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"search space {self.space!r}: config key {name!r} must be {allowed}, got {got!r} "
            f"({type(got).__name__}); use a value from space.sample() / space.suggest() or fix "
            f"{name!r} in the config"
        )

    def _read(self, name: str) -> Any:
        if name not in self.config:
            raise InvalidArgumentError(
                f"search space {self.space!r}: config misses key {name!r} (the values read "
                f"before it: {self.values}); a full config comes from space.sample(rng) or "
                "space.suggest(trial)"
            )
        return self.config[name]

    def _categorical(self, name: str, choices: tuple[Choice, ...]) -> Any:
        got = self._read(name)
        for c in choices:  # the stored choice itself: 4 matches 4.0, True never matches 1
            if _kind(got) == _kind(c) and got == c:
                return c
        raise self._fail(name, got, f"one of {list(choices)}")

    def _int(self, name: str, low: int, high: int, step: int, log: bool) -> int:
        got = self._read(name)
        grid = f" on the grid {low} + k*{step}" if step != 1 else ""
        if not _is_int(got):
            raise self._fail(name, got, f"an int in [{low}, {high}]{grid} (not a bool or float)")
        if not low <= int(got) <= high or (int(got) - low) % step:
            raise self._fail(name, got, f"an int in [{low}, {high}]{grid}")
        return int(got)

    def _const(self, name: str, value: Choice) -> Any:
        if name not in self.config:
            return value
        got = _plain(self.config[name])
        ok = _kind(got) == _kind(value) and (isinstance(value, float) or _is_int(got) == _is_int(value))
        if not ok:
            raise self._fail(name, self.config[name], f"a {type(value).__name__} like the space's {value!r}")
        return float(got) if isinstance(value, float) else got  # type: ignore[arg-type]

    def finish(self) -> None:
        extra = [k for k in self.config if k not in self.values]
        if extra:
            raise InvalidArgumentError(
                f"search space {self.space!r}: config keys {extra} are not parameters of this "
                f"config (its keys are {list(self.values)}); remove them (a conditional key, "
                "such as a per-stage width_i, exists only while its condition holds, e.g. "
                "i < num_stages)"
            )


def positive_int(value: Any, what: str) -> int:
    if not _is_int(value) or value < 1:
        raise InvalidArgumentError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


class Space:
    """Base class of search spaces: subclass it, set ``name``, write ``_draw`` and ``_build``.

    ``_draw(pick)`` states every choice once through a :class:`Picker`; ``_build(config, ...)``
    constructs the network from a validated config. Everything else (Optuna suggestion, random
    sampling, validation, parameter and FLOP counts) is derived here. A config is a flat dict of
    plain JSON values whose keys are the Optuna parameter names plus the space's constants.

    Keep instances plain (numbers, strings, tuples as attributes, no lambdas): Ray pickles them.
    A stored config is rebuilt against the *registered* instance, so changing a registered
    space's choices can invalidate stored configs; register a variant under a new ``name``
    instead (e.g. ``register_space(ResNetSpace(name="resnet_wide", widths=(64, 128)))``).

    Example::

        class TinySpace(Space):
            name = "tiny"

            def _draw(self, pick):
                pick.categorical("width", (8, 16))

            def _build(self, config, *, num_classes, in_chans):
                return nn.Sequential(nn.Conv2d(in_chans, config["width"], 3), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(config["width"], num_classes))
    """

    name: str = ""

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"a search space name must be a non-empty string, got {name!r}")
            self.name = name
        if not self.name:
            raise InvalidArgumentError(
                f"{type(self).__name__} has no name; set the class attribute `name` or pass name=..."
            )

    # ------------------------------------------------------------------ what subclasses write

    def _draw(self, pick: Picker) -> None:
        """Call ``pick`` once per parameter/constant; later calls may depend on earlier values."""
        raise NotImplementedError(f"{type(self).__name__} must implement _draw(pick)")

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        """Construct the network from a validated config."""
        raise NotImplementedError(f"{type(self).__name__} must implement _build(config, ...)")

    def _describe(self, config: dict[str, Any]) -> str:
        """One line for a validated config; override for a more compact form."""
        return f"{self.name} " + " ".join(f"{k}={v}" for k, v in config.items())

    # ------------------------------------------------------------------ configs

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A config drawn by an Optuna trial (``trial.suggest_categorical`` / ``suggest_int``).

        Args:
            trial: an ``optuna.Trial`` (or anything with the same two ``suggest_*`` methods).

        Returns:
            The config: the trial's parameters plus the space's constants.
        """
        picker = _TrialPicker(self.name, trial)
        self._draw(picker)
        return picker.values

    def sample(self, rng: np.random.Generator | int) -> dict[str, Any]:
        """A config drawn uniformly at random (per parameter; conditional ones as drawn).

        Categoricals are uniform over their choices, ints uniform on their step grid, and
        ``log=True`` ints drawn uniformly in log space over ``[low - 0.5, high + 0.5]``, then
        rounded and clamped to ``[low, high]``.

        Args:
            rng: a ``numpy.random.Generator`` or an int seed for ``np.random.default_rng``.
        """
        if isinstance(rng, np.random.Generator):
            gen = rng
        elif _is_int(rng):
            gen = np.random.default_rng(int(rng))
        else:
            raise InvalidArgumentError(
                f"sample() needs a numpy.random.Generator or an int seed, got {type(rng).__name__}; "
                "pass np.random.default_rng(seed) or the seed"
            )
        picker = _RandomPicker(self.name, gen)
        self._draw(picker)
        return picker.values

    def _replay(self, config: Mapping[str, Any]) -> _ReplayPicker:
        if not isinstance(config, Mapping):
            raise InvalidArgumentError(
                f"search space {self.name!r}: a config must be a dict, got {type(config).__name__}"
            )
        picker = _ReplayPicker(self.name, config)
        self._draw(picker)
        picker.finish()
        return picker

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check a config against the space and return a normalised copy.

        Every parameter must be present, be one of its choices (categoricals; ``4`` matches the
        choice ``4.0`` and becomes it, but ``True`` never matches ``1``) or an int in range on
        its step grid; keys the config does not use are errors. A missing constant takes the
        space's value; a present one is accepted as given when it has the constant's type (so a
        ViT built for ``img_size=64`` stays rebuildable), which ``_build`` then relies on.

        Raises:
            InvalidArgumentError: naming the space, the key, the value and what is allowed.
        """
        return self._replay(config).values

    def trial_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The Optuna parameters of ``config`` (constants left out).

        ``study.enqueue_trial(space.trial_params(cfg))`` makes ``space.suggest(study.ask())``
        return ``cfg`` again (with the space's constants); ``space.validate(trial.params)``
        reads a finished trial back.
        """
        return self._replay(config).params

    def distributions(self, config: Mapping[str, Any]) -> dict[str, BaseDistribution]:
        """The Optuna distributions of ``config``'s parameters (for ``optuna.trial.create_trial``)."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        out: dict[str, BaseDistribution] = {}
        for key, d in self._replay(config).dists.items():
            if d[0] == "categorical":
                out[key] = CategoricalDistribution(list(d[1]))
            else:
                out[key] = IntDistribution(d[1], d[2], step=d[3], log=d[4])
        return out

    def describe(self, config: Mapping[str, Any]) -> str:
        """One short human-readable line, e.g. ``resnet basic d=[2,2,1,1] w=[16,32,64,64] stem=16``."""
        return self._describe(self.validate(config))

    # ------------------------------------------------------------------ models

    def build(self, config: Mapping[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        """Validate ``config`` and construct the network (freshly initialised).

        Works under ``with torch.device("meta"):``; the same config always gives the same
        module names and shapes.

        Args:
            config: a config of this space (see :meth:`validate`).
            num_classes: classifier outputs.
            in_chans: input image channels.
        """
        num_classes = positive_int(num_classes, "num_classes")
        in_chans = positive_int(in_chans, "in_chans")
        return self._build(self.validate(config), num_classes=num_classes, in_chans=in_chans)

    def params(self, config: Mapping[str, Any], *, num_classes: int = 10, in_chans: int = 3) -> int:
        """Number of parameters of the built network (built on the meta device: no memory)."""
        with torch.device("meta"):
            model = self.build(config, num_classes=num_classes, in_chans=in_chans)
        return sum(p.numel() for p in model.parameters())

    def flops(
        self, config: Mapping[str, Any], image_size: int, *, num_classes: int = 10, in_chans: int = 3
    ) -> int:
        """Forward FLOPs of the network (eval mode) for one ``image_size``×``image_size`` image.

        Counted by ``torch.utils.flop_counter.FlopCounterMode``: FLOPs = 2 × multiply-accumulates
        of convolutions, matrix products and linear layers (attention's products included);
        normalisation, activations, pooling and biases count nothing. The count runs on the
        meta device (no memory, no compute); a model with an op that has no meta kernel is
        counted on the CPU with a batch of one instead, where torch's counter has no formula
        for the fused attention kernel (attention's products are then left out).
        """
        size = positive_int(image_size, "image_size")
        try:
            return self._count_flops("meta", config, size, num_classes, in_chans)
        except (NotImplementedError, RuntimeError):  # no meta kernel, or a data-dependent op
            return self._count_flops("cpu", config, size, num_classes, in_chans)

    def _count_flops(
        self, device: str, config: Mapping[str, Any], size: int, num_classes: int, in_chans: int
    ) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.device(device):
            model = self.build(config, num_classes=num_classes, in_chans=in_chans).eval()
            x = torch.zeros(1, in_chans, size, size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops())

    def __repr__(self) -> str:
        attrs = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "name"}
        args = ", ".join(f"{k}={v!r}" for k, v in {"name": self.name, **attrs}.items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------- constructor checks


def int_choices(values: Sequence[int], what: str) -> tuple[int, ...]:
    """Constructor argument ``values`` as a tuple of distinct integers >= 1."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InvalidArgumentError(f"{what} must be a non-empty list of integers >= 1, got {values!r}")
    out = tuple(positive_int(v, f"every entry of {what}") for v in values)
    if len(set(out)) != len(out):
        raise InvalidArgumentError(f"{what} must not repeat a value, got {list(out)}")
    return out


def str_choices(values: Sequence[str], what: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """Constructor argument ``values`` as a tuple of distinct names from ``allowed``."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InvalidArgumentError(f"{what} must be a non-empty list of names from {list(allowed)}, got {values!r}")
    bad = [v for v in values if v not in allowed]
    if bad or len(set(values)) != len(values):
        raise InvalidArgumentError(f"{what} must be distinct names from {list(allowed)}, got {list(values)}")
    return tuple(values)


def int_range(low: int, high: int, what: str) -> tuple[int, int]:
    """Constructor bounds ``low <= high``, both integers >= 1."""
    lo = positive_int(low, f"the lower bound of {what}")
    hi = positive_int(high, f"the upper bound of {what}")
    if lo > hi:
        raise InvalidArgumentError(f"{what} needs low <= high, got low={lo}, high={hi}")
    return lo, hi


def list_text(values: Sequence[Any]) -> str:
    """``[2,2,1]``: a compact list for describe()."""
    return "[" + ",".join(str(v) for v in values) + "]"
