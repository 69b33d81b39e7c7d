"""The real ``nas-warmstart`` command, run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

CMD = [sys.executable, "-m", "nas_warmstart"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("nas-warmstart")
    assert script.exists()
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip()


def test_similarity_text_and_json():
    out = run("similarity", "timm:resnet18", "timm:resnet34", "--num-classes", "10")
    assert "similarity(timm:resnet18, timm:resnet34)" in out.stdout
    data = json.loads(run("similarity", "timm:resnet18", "timm:resnet18", "--json").stdout)
    assert data["similarity"] == 1.0 and data["layers"] == "extended"


def test_transfer_writes_safetensors_with_source_weights(tmp_path, timm_model):
    src = timm_model("resnet18", seed=3, num_classes=10)
    weights = tmp_path / "src.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    out = tmp_path / "tgt.safetensors"
    proc = run("transfer", "timm:resnet18", "timm:resnet18", "--num-classes", "10",
               "--source-weights", str(weights), "--out", str(out), "--json")
    report = json.loads(proc.stdout)
    assert report["identical"] and report["coverage"] == 1.0
    got = load_file(str(out))
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("similarity", "timm:resnet18"), "the following arguments are required"),
        (("similarity", "resnet18", "timm:resnet18"), "use timm:<name>"),
        (("similarity", "timm:resnet_does_not_exist", "timm:resnet18"), "timm has no model"),
        (("transfer", "timm:resnet18", "timm:resnet18", "--out", "x.pt"), "must name a .safetensors file"),
        (("transfer", "timm:resnet18", "timm:resnet18", "--out", "x.safetensors", "--method", "crop"), "unknown transfer method"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle):
    proc = run(*args, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_demo_runs():
    data = json.loads(run("demo", "--json").stdout)
    assert data["identical_outputs_equal"] is True
    sims = [r["similarity"] for r in data["ranking"]]
    assert sims == sorted(sims, reverse=True)
