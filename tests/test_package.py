"""Package-level contracts: light import, curated surface, registries."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import nas_warmstart as nw
from nas_warmstart import dpiat


def test_import_does_not_pull_ray_or_plotting():
    code = "import sys, nas_warmstart; bad = [m for m in ('ray', 'matplotlib', 'optuna') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_public_names_exist():
    for name in nw.__all__:
        assert hasattr(nw, name), name


def test_errors_share_one_base():
    for cls in (nw.InvalidArgumentError, nw.NoMatchableLayersError, nw.IncompatibleModelsError, nw.SignatureError, nw.OptionalDependencyError):
        assert issubclass(cls, nw.NasWarmstartError)


def test_registry_collision_warns_and_custom_matching_is_usable():
    from nas_warmstart.dpiat.matching import MATCHINGS, dp_matching

    @dpiat.register_matching("dp_alias_for_test")
    def alias(source, target, *, seed=0):
        return dp_matching(source, target, seed=seed)

    try:
        with pytest.warns(nw.NasWarmstartWarning, match="already registered"):
            dpiat.register_matching("dp_alias_for_test")(lambda s, t, *, seed=0: None)
        import torch.nn as nn

        m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        assert dpiat.match(m, m, matching=alias).score == 2.0
    finally:
        MATCHINGS._entries.pop("dp_alias_for_test", None)
    assert "dp_alias_for_test" not in dpiat.list_matchings()


def test_no_warnings_on_normal_use():
    import torch.nn as nn

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nw.transfer(nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 5)))


def test_try_import_names_what_to_install(monkeypatch):
    from nas_warmstart._plugins import try_import

    assert try_import("json").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(nw.OptionalDependencyError, match=r'--png needs matplotlib.*pip install "nas-warmstart\[viz\]"'):
        try_import("matplotlib", extra="viz", purpose="--png")
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # imported already by earlier tests
    with pytest.raises(ImportError, match="pip install scikit-learn$"):  # the distribution, not the module
        try_import("sklearn.datasets")


def test_every_public_name_imports_from_where_it_did_before_the_stage_folders():
    # The names importable before the package was split into one folder per stage. The DPIAT
    # parts moved from the top level to nas_warmstart.dpiat in release 0.2: at the top level
    # they still work for one release, with a DeprecationWarning (tests/test_layout.py).
    import nas_warmstart.data as data
    import nas_warmstart.guidance as guidance
    import nas_warmstart.integrations.optuna as integration

    before = {
        nw: "ArchSpec FitResult GuidanceLoss IncompatibleModelsError "
            "InvalidArgumentError LocalPool NasWarmstartError NasWarmstartWarning "
            "NoBuilderError NoMatchableLayersError OptionalDependencyError Ranked SignatureError StoredNetwork "
            "TransferReport UnsafeFileError WarmStart LocalPoolEntry PoolEntryCorruptError PoolEntryExistsError "
            "PoolEntryNotFoundError PoolError __version__ evaluate fit linear_cka "
            "list_builders recalibrate_bn register_builder similarity similarity_matrix transfer warm_start",
        dpiat: "PAPER_LEAF_CLASSES ArchSignature CopiedTensor LayerPair LayerSig Matching TransferReport "
               "UntouchedTensor cache_info clear_caches list_matchings list_transfer_methods match "
               "register_matching register_transfer_method signature MATCHINGS TRANSFER_METHODS",
        data: "DataSplits DatasetNotFoundError list_datasets load_dataset",
        guidance: "DISTANCES PAIRINGS Captured DistanceFn GuidanceLoss Pair PairingFn PairsSpec capture "
                  "default_layers dpiat_pairs linear_cka list_distances list_pairings paper_layers "
                  "register_distance register_pairing resolve_pairs uniform_pairs",
        integration: "ArtifactEntry OptunaArtifactPool PoolCallback SearchObjective WarmStarter enqueue_pool "
                     "make_objective measure_latency open_study DUPLICATE_ATTR ENTRY_ATTR ENTRY_SPEC_ATTR "
                     "SEED_ATTR trial_entry_name",
    }
    for module, names in before.items():
        missing = [n for n in names.split() if not hasattr(module, n)]
        assert not missing, (module.__name__, missing)
    assert issubclass(nw.LocalPool, nw.Pool) and issubclass(integration.OptunaArtifactPool, nw.Pool)
    assert dpiat.TransferContext.__name__ == "TransferContext" and callable(dpiat.TransferContext.copy)
    assert set(dpiat.__all__) == set(before[dpiat].split()) | {"TransferContext"}
    assert nw.TransferReport is dpiat.TransferReport  # transfer's result: at both places


def test_rank_is_the_pools_rank_with_the_target_first(tmp_path):
    from torch import nn

    pool = nw.LocalPool(tmp_path / "pool")
    for name, width, data in (("a", 4, "digits"), ("b", 8, "digits"), ("c", 16, "cifar")):
        pool.add(name, nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2)), dataset=data)
    target = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    assert nw.rank(target, pool) == pool.rank(target)
    got = nw.rank(target, pool, k=1, dataset="digits", exclude=["a"])
    assert got == pool.rank(target, k=1, dataset="digits", exclude=["a"]) and [r.name for r in got] == ["b"]
    with pytest.raises(nw.InvalidArgumentError, match=r"rank's pool must be a Pool .*got str .*LocalPool\(path\)"):
        nw.rank(target, str(tmp_path / "pool"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'datasett'"):  # no filter is invented
        nw.rank(target, pool, datasett="digits")


def test_the_whole_job_is_public():
    # `nas-warmstart run` as a library (nas_warmstart/pipeline/), importable without optuna or ray
    for name in ("run", "RunConfig", "RunResult"):
        assert name in nw.__all__, name
    import nas_warmstart.pipeline as pipeline

    assert nw.run is pipeline.run and nw.RunConfig is pipeline.RunConfig and nw.RunResult is pipeline.RunResult
    assert {"OptunaBackend", "RayBackend", "SearchBackend"} <= set(pipeline.__all__)


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"min": 1, "_positive": True}, 0, "k must be a positive integer, got 0"),
        ({"min": 1, "_positive": True}, True, "k must be a positive integer, got True"),  # bool is no int here
        ({"min": 0, "hint": " (0: off)"}, -1, "k must be an integer >= 0 (0: off), got -1"),
        ({"min": 8, "max": 1024}, 2048, "k must be an integer between 8 and 1024, got 2048"),
        ({"none_ok": True}, 1.5, "k must be an integer or None, got 1.5"),
    ],
)
def test_one_integer_rule_with_one_wording(kwargs, value, message):
    from nas_warmstart._args import check_int

    with pytest.raises(nw.InvalidArgumentError) as e:
        check_int("k", value, **kwargs)
    assert str(e.value) == message
    assert check_int("k", 8, min=8, max=8) == 8 and check_int("k", None, none_ok=True) is None


def test_a_registered_data_set_loads_by_name():
    from nas_warmstart.data import DATASETS, list_datasets, load_dataset, register_dataset

    calls = []

    @register_dataset("contract-tiny")
    def tiny(root, image_size, seed):
        calls.append((root, image_size, seed))
        return DATASETS.get("synthetic")(root, image_size, seed)

    data = load_dataset("contract-tiny", image_size=16, seed=3)
    assert calls == [(None, 16, 3)] and data.image_size == 16 and "contract-tiny" in list_datasets()
    with pytest.raises(nw.InvalidArgumentError, match="register a loader with"):
        load_dataset("no-such-data")
