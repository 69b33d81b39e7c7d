"""What a Tune search checks before Ray starts: the cluster address, the storage path, the
resources per trial. Each one fails fast with the rule, the value and the fix; nothing here
starts Ray or writes anything.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from nas_warmstart._errors import InvalidArgumentError, fix

__all__ = ["URI_SCHEMES", "check_address", "check_per_trial", "check_resources", "check_storage_path"]

#: URI schemes pyarrow opens (Tune writes through pyarrow filesystems).
URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_address(address: str) -> None:
    """Refuse an address that cannot be a reachable Ray head, quickly (no 60 s Ray timeout).

    ``auto`` is taken as it is; ``HOST:PORT`` (or ``ray://HOST:PORT``) must answer a TCP
    connection within 5 seconds.
    """
    flag = fix("address", "--address")
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, sep, port = address[len("ray://"):].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            f"{flag} {address!r} is not auto or HOST:PORT; give the head node's address as "
            "printed by `ray start --head` (e.g. 10.0.0.5:6379), or auto on a node of the cluster"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as e:
        raise InvalidArgumentError(
            f"{flag} {address!r}: no Ray head answers there ({e.strerror or e}); start one with "
            "`ray start --head --port 6379` on the head node, or give its address (nothing was written)"
        ) from None


def check_storage_path(path: str) -> str:
    """Refuse a storage path Tune could not write, before anything starts; returns it absolute
    (a URI of :data:`URI_SCHEMES` is returned as it is)."""
    flag = fix("storage_path", "--storage-path")
    if "://" in path:
        scheme = path.split("://", 1)[0].lower()
        if scheme not in URI_SCHEMES:
            raise InvalidArgumentError(
                f"{flag} {path!r}: Tune cannot write to {scheme}:// URIs; give a directory, or a "
                f"URI of {', '.join(s + '://' for s in URI_SCHEMES)}"
            )
        return path
    where = Path(path).expanduser().absolute()
    if where.exists() and not where.is_dir():
        raise InvalidArgumentError(f"{flag} {path!r} is a file; give a directory (created if missing)")
    parent = next(p for p in (where, *where.parents) if p.exists())
    if not os.access(parent, os.W_OK):
        raise InvalidArgumentError(f"{flag} {path!r}: {str(parent)!r} is not writable; give another directory")
    return str(where)


def check_per_trial(*, cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse resources per trial that are negative or not finite, or a trial that needs nothing."""
    for flag, v in ((fix("cpus_per_trial", "--cpus-per-trial"), cpus_per_trial),
                    (fix("gpus_per_trial", "--gpus-per-trial"), gpus_per_trial)):
        if not math.isfinite(v) or v < 0:
            raise InvalidArgumentError(f"{flag} must be a number >= 0, got {v:g}")
    if cpus_per_trial == 0 and gpus_per_trial == 0:
        raise InvalidArgumentError(
            f"{fix('cpus_per_trial=0', '--cpus-per-trial 0')} with no GPU would start every trial at once; "
            "give at least 0.1")


def check_resources(cluster: Mapping[str, float], where: str, *, cpus_per_trial: float,
                    gpus_per_trial: float) -> None:
    """Refuse resources per trial that no node of ``cluster`` (Ray's resource totals) has.

    Args:
        cluster: ``{"CPU": n, "GPU": m}`` (``ray.cluster_resources()``, or this machine's).
        where: the cluster in words (``"this machine"``, ``"the cluster at HOST:PORT"``).
        cpus_per_trial, gpus_per_trial: what each trial asks for.
    """
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if gpus_per_trial and gpus_per_trial > gpus:
        raise InvalidArgumentError(
            f"{fix('gpus_per_trial', '--gpus-per-trial')} {gpus_per_trial:g}: {where} has {gpus:g} GPUs, so no "
            f"trial could start; {fix('give gpus_per_trial=0', 'leave the flag out')} to train on CPUs, or join "
            f"a cluster with GPU nodes ({fix('address', '--address')})"
        )
    if cpus_per_trial > cpus:
        raise InvalidArgumentError(
            f"{fix('cpus_per_trial', '--cpus-per-trial')} {cpus_per_trial:g}: {where} has {cpus:g} CPUs, so no "
            f"trial could start; give at most {cpus:g}"
        )
