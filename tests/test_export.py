"""Export stage: safetensors + spec.json + a checked ONNX file, and the exact way back.

Oracles: the reloaded PyTorch network must give bit-identical outputs; the ONNX file is run
here by onnxruntime on a batch the exporter never saw (another seed and batch size) and
compared with PyTorch by this file, not by trusting the report's number.
"""

from __future__ import annotations

import copy
import json
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
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.safetensors", "spec.json"]
    assert report.params == sum(p.numel() for p in exported["model"].parameters())
    assert report.to_dict() == {
        "weights": "model.safetensors", "spec": "spec.json", "onnx": "model.onnx",
        "onnx_max_abs_diff": report.onnx_max_abs_diff, "onnx_opset": report.onnx_opset,
        "params": report.params,
    }
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
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
    assert json.loads((tmp_path / "spec.json").read_text()) == {
        **spec.to_dict(), "image_size": 8, "in_chans": 2, "num_classes": 3,
    }
    assert report.to_dict()["onnx"] is None
    x = _images(3, seed=1, in_chans=2, size=8)
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path)(x), copy.deepcopy(model).eval()(x))
