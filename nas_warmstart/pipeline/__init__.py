"""The whole job as a library: :func:`run` a :class:`RunConfig`, get a :class:`RunResult`.

``nas-warmstart run`` is a thin shell over this package (it parses flags into a
``RunConfig`` and prints the lines :func:`run` reports). The searches run through one seam,
:class:`SearchBackend` (Optuna in this process, or Ray Tune); everything after them is the
same code for both.

Example::

    from nas_warmstart import RunConfig, run

    result = run(RunConfig("mlp", trials=2, epochs=1, pool="pool", out="my-run", onnx=False))
    print(result.winner["val_accuracy"], result.files["html"])
"""

from __future__ import annotations

from ._backends import OptunaBackend, RayBackend, SearchBackend, silent
from ._config import RunConfig
from ._result import RunResult
from ._run import RunInterrupted, run, split_refs, write_record

__all__ = ["OptunaBackend", "RayBackend", "RunConfig", "RunInterrupted", "RunResult", "SearchBackend", "run",
           "silent", "split_refs", "write_record"]
