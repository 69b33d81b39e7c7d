"""A driver process for tests/test_ray_convert.py: joins the test's Ray cluster and runs
one distributed conversion (the test kills this process mid-run, then resumes in its own)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def log_stage(path: str):
    def callback(rec) -> None:  # runs on the first worker
        with open(path, "a") as f:
            f.write(json.dumps(rec.to_dict()) + "\n")

    return callback


def run(address: str | None, storage: str, name: str, guide_file: str, log: str, kwargs: dict):
    from safetensors.torch import load_file

    from nas_warmstart.data import load_dataset
    from nas_warmstart.integrations.ray import convert_distributed
    from tests.test_convert import tiny_convnet, tiny_resnet

    guide = tiny_resnet(0)
    guide.load_state_dict(load_file(guide_file))
    return convert_distributed(guide, tiny_convnet(1), load_dataset("synthetic"), num_workers=2, storage_path=storage,
                               name=name, address=address, callback=log_stage(log), **kwargs)


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address, storage, name, guide_file, log, kwargs = sys.argv[1:7]
    res = run(address, storage, name, guide_file, log, json.loads(kwargs))
    Path(log).with_suffix(".done").write_text(str(res.accuracy))
