"""RayPool: a pool owned by one Ray actor, so the nodes of a cluster need no shared disk.

A :class:`~nas_warmstart.LocalPool` is a directory with an SQLite index. Trials on other nodes
would need that directory on a shared filesystem, and SQLite must never see concurrent
writers over a network filesystem. :class:`RayPool` keeps the directory on one node (the head
by default) inside a named, detached actor, the pool's only reader and writer:

* ranking ships the candidate's *signature* to the actor (a few kB) and returns the ranked
  entry records; the similarity is computed where the index is, by the same code as
  :meth:`LocalPool.rank` (bit-identical answers);
* loading a source returns the entry's verified safetensors bytes through Ray's object store;
  the trial rebuilds the module (or a :class:`~nas_warmstart.StoredNetwork`) itself;
* registering sends the checked, serialisable entry to the actor, which writes it (one writer,
  so entries are added one at a time, each complete before it becomes visible).

A ``RayPool`` object is a small handle (the actor's name and namespace): it pickles into Tune
trainables and Ray tasks, which reconnect to the same actor. The pool directory's path is
known to the actor only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from nas_warmstart._args import check_choice
from nas_warmstart._errors import (
    InvalidArgumentError,
    NasWarmstartError,
    PoolEntryCorruptError,
    PoolError,
    SignatureError,
)
from nas_warmstart.dpiat.signature import LAYER_MODES, ArchSignature, LayersMode, signature
from nas_warmstart.pool.base import Candidate, NewEntry, Pool, Ranked
from nas_warmstart.pool.local import LocalPool, LocalPoolEntry
from nas_warmstart.pool.stored import build_loaded, source_from
from nas_warmstart.pool.weights_io import safetensors_header

__all__ = ["DEFAULT_NAMESPACE", "RayPool"]

#: the Ray namespace of the pool actors (named actors are looked up per namespace).
DEFAULT_NAMESPACE = "nas_warmstart"
_ACTOR_PREFIX = "nas-warmstart-pool-"
_HEAD_RESOURCE = "node:__internal_head__"  # a resource only the head node has


@dataclass(frozen=True)
class _Raised:
    """An exception raised in the actor, carried back as a value (re-raised as itself)."""

    error: BaseException


class _PoolServer:
    """The actor's body: one LocalPool, every call serialised (a plain Ray actor runs one
    method at a time), warnings and errors handed back to the caller."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls: dict[tuple[str, str, int], int] = {}
        self.error: BaseException | None = None
        try:
            self.zoo = LocalPool(path)
        except (NasWarmstartError, OSError) as e:  # handed to the client by info(), not a crash
            self.error = e

    def info(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": _Raised(self.error)}
        return {"path": self.path, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(), "entries": len(self.zoo)}

    def activity(self) -> list[dict[str, Any]]:
        return [{"method": m, "node_id": node, "pid": pid, "calls": n}
                for (m, node, pid), n in sorted(self.calls.items())]

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], who: tuple[str, int]) -> Any:
        key = (method, who[0], who[1])
        self.calls[key] = self.calls.get(key, 0) + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value: Any = getattr(self, "_" + method)(*args, **kwargs)
            except (NasWarmstartError, KeyError, ValueError, TypeError, OSError) as e:
                value = _Raised(e)
        return value, [(str(w.message), w.category) for w in caught]

    # what the client asks for ------------------------------------------------------------

    def _names(self) -> list[str]:
        return self.zoo.names()

    def _get(self, name: str) -> LocalPoolEntry:
        return self.zoo.get(name)

    def _fetch(self, name: str) -> tuple[LocalPoolEntry, bytes]:
        entry, _, data = self.zoo._load_entry(name)  # verified size and SHA-256
        return entry, data

    def _rank(self, target: Any, kwargs: dict[str, Any]) -> list[Ranked[LocalPoolEntry]]:
        return self.zoo.rank(target, **kwargs)

    def _candidates(self, dataset: str | None) -> list[Candidate]:
        return self.zoo._usable(self.zoo._candidates(dataset))

    def _keys(self, digests: list[str], layers: LayersMode) -> tuple[list[tuple[Any, ...]], list[int]]:
        return self.zoo._keys(digests, layers, {})

    def _store(self, new: NewEntry) -> LocalPoolEntry:
        existing = self.zoo._existing(new.name, new.if_exists)
        if existing is not None and new.if_exists == "skip":
            return existing
        return self.zoo._store(new, existing)

    def _remove(self, name: str, missing_ok: bool) -> bool:
        return self.zoo.remove(name, missing_ok=missing_ok)

    def _check(self, full: bool) -> dict[str, list[str]]:
        return self.zoo.check(full=full)


def _actor_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidArgumentError(
            f"RayPool name must be a non-empty string of letters, digits, '-', '_' and '.', got {name!r}"
        )
    return _ACTOR_PREFIX + name


def _require_ray() -> None:
    if not ray.is_initialized():
        raise InvalidArgumentError(
            "RayPool needs a running Ray: call ray.init() (or ray.init(address='auto') to join a "
            "cluster) first"
        )


class RayPool(Pool[LocalPoolEntry]):
    """A :class:`~nas_warmstart.LocalPool` owned by a named, detached Ray actor on one node.

    Create it on the driver with the pool directory; trials, tasks and other drivers reach the
    same actor by name (``RayPool.connect()``), or get the object itself (it pickles as a
    handle). Every pool method works as on a ``LocalPool``, with the same answers; the
    directory is opened by the actor's process only, so the other nodes need no access to it.

    Args:
        path: the pool directory on the node that will hold the actor (made absolute here;
            created if missing). None connects to the running pool called ``name``.
        name: the pool's name on the cluster (several pools may run side by side).
        node: where the actor runs: ``"head"`` (default: the head node), ``"here"`` (this
            process's node) or a Ray node id.
        namespace: the Ray namespace of the actor.

    Raises:
        InvalidArgumentError: Ray is not initialised; a pool of that name already runs on
            another directory; no pool of that name runs (``path=None``).

    The actor is detached: it outlives the driver that made it (a restarted search finds it
    again) and ends with the cluster or :meth:`shutdown`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        name: str = "default",
        node: str = "head",
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        _require_ray()
        self.name = name
        self.namespace = namespace
        actor_name = _actor_name(name)
        if path is None:
            try:
                self._actor: Any = ray.get_actor(actor_name, namespace=namespace)
            except ValueError:
                raise InvalidArgumentError(
                    f"no RayPool called {name!r} runs on this cluster (namespace {namespace!r}); "
                    "create it on the driver with RayPool(path)"
                ) from None
            return
        where = Path(path).expanduser().resolve()
        options: dict[str, Any] = {
            "name": actor_name, "namespace": namespace, "lifetime": "detached", "get_if_exists": True,
            "num_cpus": 0, "max_restarts": -1,  # a lost actor process restarts on its node, same directory
        }
        if node == "head":
            options["resources"] = {_HEAD_RESOURCE: 0.001}
        else:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node_id = ray.get_runtime_context().get_node_id() if node == "here" else node
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            if node_id not in alive:
                raise InvalidArgumentError(
                    f"RayPool node must be 'head', 'here' or the id of a live node, got {node!r} "
                    f"(live nodes: {sorted(alive)})"
                )
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        self._actor = ray.remote(_PoolServer).options(**options).remote(str(where))
        info = self.info()  # waits for the actor: a pool that cannot open fails here
        if "error" in info:
            ray.kill(self._actor, no_restart=True)  # frees the name for a corrected call
            raise info["error"].error
        if info["path"] != str(where):
            raise InvalidArgumentError(
                f"a RayPool called {name!r} already runs on {info['path']!r}, not {str(where)!r}; "
                "give this pool another name=, or RayPool.connect(name) to use that one"
            )

    @classmethod
    def connect(cls, name: str = "default", *, namespace: str = DEFAULT_NAMESPACE) -> RayPool:
        """The running pool called ``name`` (made by ``RayPool(path, name=name)``)."""
        return cls(None, name=name, namespace=namespace)

    def __reduce__(self) -> Any:
        return (_reconnect, (self.name, self.namespace, self._actor))

    def __repr__(self) -> str:
        return f"RayPool(name={self.name!r}, namespace={self.namespace!r})"

    # ------------------------------------------------------------------ the remote calls

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        who = (ray.get_runtime_context().get_node_id(), os.getpid())
        try:
            reply: tuple[Any, list[tuple[str, type[Warning]]]] = ray.get(
                self._actor.call.remote(method, args, kwargs, who))
        except ray.exceptions.RayActorError as e:
            raise PoolError(f"the RayPool actor {self.name!r} is not reachable: {e}") from None
        value, caught = reply
        for message, category in caught:
            warnings.warn(message, category, stacklevel=3)
        if isinstance(value, _Raised):
            raise value.error
        return value

    def info(self) -> dict[str, Any]:
        """Where the pool lives: ``path``, ``node_id`` and ``pid`` of the actor, ``entries``."""
        try:
            info: dict[str, Any] = ray.get(self._actor.info.remote())
            return info
        except ray.exceptions.RayActorError as e:
            cause = getattr(e, "cause", None) or e
            raise PoolError(f"the RayPool actor {self.name!r} could not start: {cause}") from None

    def activity(self) -> list[dict[str, Any]]:
        """Every call the actor served: ``method``, caller ``node_id`` and ``pid``, ``calls``."""
        calls: list[dict[str, Any]] = ray.get(self._actor.activity.remote())
        return calls

    def shutdown(self) -> None:
        """Stop the actor (the pool directory stays; ``RayPool(path)`` opens it again)."""
        ray.kill(self._actor, no_restart=True)

    # ------------------------------------------------------------------ Pool primitives

    def names(self) -> list[str]:
        return self._call("names")

    def get(self, name: str) -> LocalPoolEntry:
        return self._call("get", name)

    def _fetch(self, name: str) -> tuple[LocalPoolEntry, bytes]:
        return self._call("fetch", name)

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_bytes

        return load_bytes(self._fetch(name)[1])

    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        from safetensors.torch import load as load_bytes

        entry, data = self._fetch(name)
        return build_loaded(entry.name, entry.spec, load_bytes(data), device=device)

    def load_source(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        from safetensors.torch import load as load_bytes

        entry, data = self._fetch(name)  # the actor's zoo checked the hash and the header
        try:
            return source_from(entry.name, entry.spec, load_bytes(data), safetensors_header(data)[0], device=device)
        except NasWarmstartError as e:
            if not isinstance(e, SignatureError):
                raise  # NoBuilderError, weights that do not fit the spec: their own words
            raise _bad_description(entry, e) from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            # the source description in the file's metadata is whatever the file's writer chose
            raise _bad_description(entry, e) from None

    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        return self._call("remove", name, missing_ok)

    def check(self, *, full: bool = False) -> dict[str, list[str]]:
        """:meth:`LocalPool.check` of the pool, run by the actor."""
        return self._call("check", full)

    def _existing(self, name: str, if_exists: str) -> LocalPoolEntry | None:
        return None  # the actor looks, in the same call that writes (no race between the two)

    def _store(self, new: NewEntry, existing: LocalPoolEntry | None, **options: Any) -> LocalPoolEntry:
        return self._call("store", new)

    def rank(
        self,
        target: Any,
        *,
        k: int | None = 5,
        dataset: str | None = None,
        min_metric: float | Mapping[str, float] | None = None,
        metric: str = "accuracy",
        exclude: Sequence[str] = (),
        layers: LayersMode = "extended",
    ) -> list[Ranked[LocalPoolEntry]]:
        check_choice("layers", layers, LAYER_MODES)
        if isinstance(target, nn.Module):  # ship the signature, never the module
            target = signature(target, layers=layers)
        elif not isinstance(target, (ArchSignature, str, Mapping)) and not hasattr(target, "to_dict"):
            raise InvalidArgumentError(
                f"rank target must be a module, an ArchSignature, an ArchSpec, a spec dict or a "
                f"reference ('timm:<name>', 'space:<name>:<json>', 'pool:<entry>'), got {type(target).__name__}"
            )
        kwargs = {"k": k, "dataset": dataset, "min_metric": dict(min_metric) if isinstance(min_metric, Mapping) else min_metric,
                  "metric": metric, "exclude": list(exclude), "layers": layers}
        return self._call("rank", target, kwargs)

    rank.__doc__ = Pool.rank.__doc__

    def _candidates(self, dataset: str | None) -> list[Candidate]:
        return self._call("candidates", dataset)

    def _keys(self, digests: list[str], layers: LayersMode, by_digest: Mapping[str, Candidate]
              ) -> tuple[list[tuple[Any, ...]], list[int]]:
        return self._call("keys", digests, layers)


def _bad_description(entry: LocalPoolEntry, e: Exception) -> PoolEntryCorruptError:
    return PoolEntryCorruptError(
        f"pool entry {entry.name!r}: the source description stored in its weights file is malformed "
        f"({type(e).__name__}: {' '.join(str(e).split())}); remove the entry with pool.remove({entry.name!r})"
        " and add it again",
        entry=entry.name,
    )


def _reconnect(name: str, namespace: str, actor: Any) -> RayPool:
    pool = RayPool.__new__(RayPool)
    pool.name, pool.namespace, pool._actor = name, namespace, actor
    return pool
