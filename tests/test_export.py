"""Export stage: safetensors + spec.json + a checked ONNX file, and the exact way back.

Oracles: the reloaded PyTorch network must give bit-identical outputs; the ONNX file is run
here by onnxruntime on a batch the exporter never saw (another seed and batch size) and
compared with PyTorch by this file, not by trusting the report's number.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open
from torch import nn

import search_spaces as ss
from nas_warmstart import ArchSpec, InvalidArgumentError, OptionalDependencyError, register_builder
from nas_warmstart.export import ExportError, ExportReport, export_model, load_exported

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 32
#: Every space search_spaces registers itself (tests register more; they are not ours to export).
BUILTIN_SPACES = sorted(
    n for n in ss.list_spaces() if type(ss.get_space(n)).__module__.startswith("search_spaces.")
)
#: Seed of each space's config (default 0): export time grows with the number of layers, so
#: the two deepest spaces take a seed whose config is shallower but still has squeeze-excite
#: blocks (and, for mobilenetv3, both activations).
SEEDS = {"efficientnet": 2, "mobilenetv3": 1}
CASES = {
    **{f"space:{n}": ArchSpec.space(n, ss.get_space(n).sample(SEEDS.get(n, 0)), num_classes=10, in_chans=1)
       for n in BUILTIN_SPACES},
    "timm:resnet18": ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[1, 1, 1, 1],
                                   channels=[16, 32, 64, 128]),
}
METADATA = {"origin": "test_export"}


def _images(batch: int, seed: int, in_chans: int = 1, size: int = IMAGE_SIZE) -> torch.Tensor:
    return torch.randn((batch, in_chans, size, size), generator=torch.Generator().manual_seed(seed))


def _perturb_batchnorm(model: nn.Module) -> int:
    """Non-default running statistics, so eval mode differs visibly from train mode."""
    gen = torch.Generator().manual_seed(5)
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            assert m.running_var is not None
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            n += 1
    return n


def _run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": x.numpy()})
    return out


def test_every_builtin_space_is_exported():
    assert set(BUILTIN_SPACES) >= {"resnet", "convnet", "mobilenetv3", "vit", "mlp", "efficientnet"}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def exported(request, tmp_path_factory):
    """One export per case, in train mode with non-default BatchNorm statistics."""
    spec = CASES[request.param]
    torch.manual_seed(0)
    model = spec.build().train()
    n_bn = _perturb_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path_factory.mktemp(request.param.replace(":", "_"))
    report = export_model(model, spec, out, image_size=IMAGE_SIZE, metadata=METADATA)
    return {"spec": spec, "model": model, "out": out, "report": report, "before": before, "n_bn": n_bn}


def test_caller_model_keeps_its_mode_device_and_weights(exported):
    model = exported["model"]
    assert model.training and all(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())
    after = model.state_dict()
    assert after.keys() == exported["before"].keys()
    assert all(torch.equal(after[k], v) for k, v in exported["before"].items())


def test_reload_is_bit_identical_to_the_eval_model(exported):
    loaded = load_exported(exported["out"])
    assert not loaded.training
    reference = copy.deepcopy(exported["model"]).eval()
    x = _images(3, seed=123)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))


def test_onnx_matches_pytorch_on_a_batch_it_never_saw(exported):
    report: ExportReport = exported["report"]
    assert report.onnx is not None and report.onnx.is_file()
    reference = copy.deepcopy(exported["model"]).eval()
    x = _images(3, seed=777)  # the export used batches of 2, 4 and 1 with seeds 0..2
    with torch.no_grad():
        expected = reference(x).numpy()
    got = _run_onnx(report.onnx, x)
    assert got.shape == expected.shape == (3, 10)
    assert float(np.abs(got - expected).max()) <= 1e-4
    assert report.onnx_max_abs_diff is not None and 0 <= report.onnx_max_abs_diff <= 1e-4


def test_onnx_file_has_the_stated_interface(exported):
    report: ExportReport = exported["report"]
    proto = onnx.load(str(report.onnx))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, IMAGE_SIZE, IMAGE_SIZE]
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert report.onnx_opset == opsets[""] and report.onnx_opset >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["origin"] == "test_export"
    assert json.loads(props["nas_warmstart_export"])["name"] == exported["spec"].name


def test_files_and_report(exported):
    spec, out, report = exported["spec"], exported["out"], exported["report"]
    assert json.loads((out / "spec.json").read_text()) == {
        **spec.to_dict(), "image_size": IMAGE_SIZE, "in_chans": 1, "num_classes": 10,
    }
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(exported["model"].state_dict())
    assert meta["origin"] == "test_export"
    assert json.loads(meta["nas_warmstart_export"])["name"] == spec.name
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.onnx", "model.safetensors", "spec.json"]
    assert report.params == sum(p.numel() for p in exported["model"].parameters())
    assert report.to_dict() == {
        "weights": "model.safetensors", "spec": "spec.json", "onnx": "model.onnx",
        "onnx_max_abs_diff": report.onnx_max_abs_diff, "onnx_opset": report.onnx_opset,
        "params": report.params, "readme": "README.md",
    }
    # the spec alone, read as it is, is the spec exported
    assert ArchSpec.from_dict(json.loads((out / "spec.json").read_text())) == spec
    json.dumps(report.to_dict())


def test_batchnorm_exports_the_eval_behaviour(exported):
    if not exported["n_bn"]:
        pytest.skip(f"{exported['spec']} has no BatchNorm")  # vit, and mlp drawn without norm
    model, report = exported["model"], exported["report"]
    x = _images(3, seed=99)
    with torch.no_grad():
        train_out = copy.deepcopy(model).train()(x).numpy()
        eval_out = copy.deepcopy(model).eval()(x).numpy()
    assert np.abs(train_out - eval_out).max() > 1e-2  # the statistics matter for this input
    got = _run_onnx(report.onnx, x)
    assert np.abs(got - eval_out).max() <= 1e-4
    loaded = load_exported(exported["out"])
    for name, buf in model.named_buffers():
        assert torch.equal(loaded.get_buffer(name), buf), name


# ------------------------------------------------------------------------------ failing exports


class _CountsCalls(nn.Module):
    """Its output depends on Python state that forward changes: the export freezes the count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(x.mean((2, 3))) * self.calls


class _BranchesOnValues(nn.Module):
    """A Python ``if`` on a tensor's value: torch.export refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x.mean((2, 3)))
        if y.sum() > 0:
            return y
        return -y


def test_a_failed_onnx_check_raises_and_changes_nothing(tmp_path):
    torch.manual_seed(0)
    spec = CASES["space:mlp"]
    export_model(spec.build(), spec, tmp_path, image_size=IMAGE_SIZE, onnx=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to \S+ .*above atol=0\.0001.*pure function.*onnx=False"):
        export_model(_CountsCalls(), None, tmp_path, image_size=4, in_chans=2)
    # no model.onnx, no staging folder, the earlier export's files as they were
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_model_the_exporter_refuses_gets_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match=r"cannot export _BranchesOnValues: .*torch\.where.*onnx=False"):
        export_model(_BranchesOnValues(), None, tmp_path, image_size=4, in_chans=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("atol", [-1, -1e-9, float("nan"), float("inf"), "1e-4", True])
def test_atol_must_be_a_finite_number_at_least_zero(tmp_path, atol):
    with pytest.raises(InvalidArgumentError, match=r"atol must be a finite number >= 0"):
        export_model(nn.Conv2d(1, 2, 3), None, tmp_path, image_size=8, in_chans=1, atol=atol)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    out = tmp_path / "never"
    with pytest.raises(OptionalDependencyError, match=r'ONNX export \(or pass onnx=False\) needs onnxruntime.*pip install "nas-warmstart\[onnx\]"'):
        export_model(nn.Conv2d(1, 2, 3), None, out, image_size=8, in_chans=1)
    assert not out.exists()
    export_model(nn.Conv2d(1, 2, 3), None, out, image_size=8, in_chans=1, onnx=False)  # no extra needed


# ------------------------------------------------------------------------------ arguments and files


def test_without_a_spec_weights_only_and_stale_files_go(tmp_path):
    torch.manual_seed(0)
    spec = CASES["space:convnet"]
    export_model(spec.build(), spec, tmp_path, image_size=IMAGE_SIZE, onnx=False)
    assert (tmp_path / "spec.json").is_file()
    (tmp_path / "model.onnx").write_bytes(b"an earlier export's file")
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(1))
    report = export_model(model, None, tmp_path, image_size=8, in_chans=1, onnx=False)
    assert (report.spec, report.onnx, report.onnx_max_abs_diff, report.onnx_opset) == (None, None, None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "model.safetensors"]
    assert report.readme is not None and "exported without an architecture spec" in report.readme.read_text()
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InvalidArgumentError, match=r"spec\.json' is missing: export_model writes it only when given a spec"):
        load_exported(tmp_path)


def test_in_chans_rules(tmp_path):
    with pytest.raises(InvalidArgumentError, match="needs in_chans when no spec is given"):
        export_model(nn.Conv2d(1, 2, 3), None, tmp_path, image_size=8)
    spec = CASES["space:convnet"]
    with pytest.raises(InvalidArgumentError, match=r"in_chans=3 disagrees with the spec's in_chans=1"):
        export_model(spec.build(), spec, tmp_path, image_size=8, in_chans=3)
    with pytest.raises(InvalidArgumentError, match=r"cannot run on images of shape \(2, 1, 8, 8\).*image_size and in_chans"):
        export_model(nn.Conv2d(3, 2, 3), None, tmp_path, image_size=8, in_chans=1)


def test_a_spec_of_another_architecture_is_refused(tmp_path):
    spec = CASES["space:convnet"]
    other = ArchSpec.space(spec.name, spec.config, num_classes=5, in_chans=1)
    with pytest.raises(InvalidArgumentError, match=r"does not describe the model.*another shape.*num_classes"):
        export_model(spec.build(), other, tmp_path / "out", image_size=8, onnx=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidArgumentError, match=r"ONNX export takes float32 models.*onnx=False"):
        export_model(spec.build().double(), spec, tmp_path / "out", image_size=8)
    assert not (tmp_path / "out").exists()


def test_a_forward_that_returns_no_logits_tensor_is_refused(tmp_path):
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(InvalidArgumentError, match="returns one tensor.*returned tuple"):
        export_model(Pair(), None, tmp_path, image_size=8, in_chans=1, onnx=False)


def test_metadata_rules(tmp_path):
    m = nn.Conv2d(1, 2, 3)
    with pytest.raises(InvalidArgumentError, match="must be strings.*'epochs': 3"):
        export_model(m, None, tmp_path, image_size=8, in_chans=1, onnx=False, metadata={"epochs": 3})
    with pytest.raises(InvalidArgumentError, match="'nas_warmstart_export' is reserved"):
        export_model(m, None, tmp_path, image_size=8, in_chans=1, onnx=False,
                     metadata={"nas_warmstart_export": "x"})


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidArgumentError, match="exists and is not a directory"):
        export_model(nn.Conv2d(1, 2, 3), None, f, image_size=8, in_chans=1, onnx=False)
    with pytest.raises(InvalidArgumentError, match="is not a directory; pass the out_dir"):
        load_exported(f)


def test_load_exported_names_the_missing_file(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"model\.safetensors' is missing: export_model writes"):
        load_exported(tmp_path)
    torch.manual_seed(0)
    spec = CASES["space:mlp"]
    export_model(spec.build(), spec, tmp_path, image_size=IMAGE_SIZE, onnx=False)
    (tmp_path / "spec.json").write_text('{"kind": "space"}')
    with pytest.raises(InvalidArgumentError, match=r"not a spec\.json written by export_model: it lacks \['name'"):
        load_exported(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"truncated")
    (tmp_path / "spec.json").write_text(json.dumps({**spec.to_dict(), "image_size": 32, "in_chans": 1, "num_classes": 10}))
    with pytest.raises(InvalidArgumentError, match=r"cannot read .*model\.safetensors"):
        load_exported(tmp_path)


def _tiny_convnet(width: int, classes: int) -> nn.Module:
    """A keyword builder: its parameters decide the classes, and the spec holds no in_chans."""
    return nn.Sequential(nn.Conv2d(2, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, classes))


register_builder("export-test-convnet", _tiny_convnet)


def test_a_builder_spec_takes_in_chans_from_the_caller(tmp_path):
    spec = ArchSpec.builder("export-test-convnet", {"width": 4, "classes": 3})
    torch.manual_seed(0)
    model = spec.build()
    _perturb_batchnorm(model)
    with pytest.raises(InvalidArgumentError, match=r"needs in_chans when the builder spec .* does not say"):
        export_model(model, spec, tmp_path, image_size=8, onnx=False)
    report = export_model(model, spec, tmp_path, image_size=8, in_chans=2, onnx=False)
    record = json.loads((tmp_path / "spec.json").read_text())
    assert record == {**spec.to_dict(), "image_size": 8, "in_chans": 2, "num_classes": 3}
    assert ArchSpec.from_dict(record) == spec  # the sizes the builder decided are not the spec's
    assert report.to_dict()["onnx"] is None
    assert "Exported without ONNX" in (tmp_path / "README.md").read_text()
    x = _images(3, seed=1, in_chans=2, size=8)
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path)(x), copy.deepcopy(model).eval()(x))


# ------------------------------------------------------------------------------ what a deployer gets


@pytest.fixture(scope="module")
def deployable(tmp_path_factory):
    """A network trained one epoch on digits, exported with the data set's preprocessing."""
    from nas_warmstart import fit
    from nas_warmstart.data import load_dataset

    data = load_dataset("digits")
    spec = CASES["space:convnet"]
    torch.manual_seed(0)
    model = spec.build()
    fit(model, data, epochs=1, seed=0, progress=False)
    out = tmp_path_factory.mktemp("deployable")
    report = export_model(model, spec, out, image_size=data.image_size, preprocessing=data.preprocessing)
    return {"data": data, "spec": spec, "model": model.eval(), "out": out, "report": report}


def _predict_snippet(readme: str) -> str:
    """The first python block after the README's predict heading."""
    section = readme[readme.index("## Predict with onnxruntime and numpy alone"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_the_readme_predict_snippet_runs_on_onnxruntime_and_numpy_alone(deployable, tmp_path):
    """Raw 8x8 digits (values 0..16) through the README's code give the classes and
    probabilities the PyTorch network gives on the data set's own (torch-preprocessed) images."""
    from sklearn.datasets import load_digits

    data, out = deployable["data"], deployable["out"]
    rows = data.indices["test"][:40]
    np.save(tmp_path / "raw.npy", load_digits().images[rows])  # (40, 8, 8), float64 0..16
    code = _predict_snippet((out / "README.md").read_text()) + (
        "\nimport sys\n"
        f"result = predict(np.load({str(tmp_path / 'raw.npy')!r}))\n"
        "assert not {'torch', 'nas_warmstart', 'search_spaces'} & set(sys.modules), sorted(sys.modules)\n"
        "print(json.dumps(result))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    x = torch.stack([data.test[i][0] for i in range(len(rows))])
    with torch.no_grad():
        probs = torch.softmax(deployable["model"](x), dim=1).numpy()
    assert [name for name, _ in got] == [str(int(i)) for i in probs.argmax(1)]
    assert np.allclose([p for _, p in got], probs.max(1), atol=1e-4)
    labels = [int(data.test[i][1]) for i in range(len(rows))]
    assert sum(name == str(y) for (name, _), y in zip(got, labels, strict=True)) >= 20  # it learned digits


def test_spec_and_onnx_metadata_carry_the_preprocessing(deployable):
    data, out = deployable["data"], deployable["out"]
    record = json.loads((out / "spec.json").read_text())
    pre = record["preprocessing"]
    assert record["image_size"] == 32 and record["in_chans"] == 1 and record["num_classes"] == 10
    assert pre["class_names"] == [str(c) for c in range(10)]
    assert pre["pixel_scale"] == 1 / 16 and pre["source_size"] == 8 and pre["resize"] == "bilinear"
    # the oracle: the digits' normalisation, recomputed here from the raw data and the split
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    up = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    train = up[torch.from_numpy(data.indices["train"])]
    assert pre["mean"] == [float(train.mean())] and pre["std"] == [float(train.std())]
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(props["nas_warmstart_export"]) == record
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["nas_warmstart_export"]) == record
    assert ArchSpec.from_dict(record) == deployable["spec"]
    readme = (out / "README.md").read_text()
    assert "resize from 8x8 to 32x32 by bilinear interpolation" in readme and "multiply the raw pixel values by 0.0625" in readme


def test_every_file_gets_the_same_mode_from_the_umask(deployable):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in deployable["out"].iterdir()}
    assert set(modes) == {"README.md", "model.onnx", "model.safetensors", "spec.json"}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_preprocessing_must_fit_the_model(tmp_path):
    from nas_warmstart.data import load_dataset

    spec = ArchSpec.space("convnet", CASES["space:convnet"].config, num_classes=10, in_chans=3)
    with pytest.raises(InvalidArgumentError, match=r"preprocessing has 1 channel\(s\).*the model takes 3"):
        export_model(spec.build(), spec, tmp_path / "x", image_size=32,
                     preprocessing=load_dataset("digits").preprocessing, onnx=False)
    with pytest.raises(InvalidArgumentError, match="preprocessing must be a Preprocessing"):
        export_model(spec.build(), spec, tmp_path / "x", image_size=32, preprocessing={"mean": [0.5]}, onnx=False)
    assert not (tmp_path / "x").exists()


def test_arch_spec_reads_an_exported_spec_but_still_refuses_unknown_fields():
    spec = CASES["space:mlp"]
    exported = {**spec.to_dict(), "image_size": 32, "in_chans": 1, "num_classes": 10,
                "preprocessing": {"mean": [0.3], "std": [0.3]}}
    assert ArchSpec.from_dict(exported) == spec
    with pytest.raises(InvalidArgumentError, match=r"unknown architecture spec fields \['resolution_px'\]"):
        ArchSpec.from_dict({**spec.to_dict(), "resolution_px": 32})

