"""Package-level contracts: light import, curated surface, registries."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import nas_warmstart as nw


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

    @nw.register_matching("dp_alias_for_test")
    def alias(source, target, *, seed=0):
        return dp_matching(source, target, seed=seed)

    try:
        with pytest.warns(nw.NasWarmstartWarning, match="already registered"):
            nw.register_matching("dp_alias_for_test")(lambda s, t, *, seed=0: None)
        import torch.nn as nn

        m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        assert nw.match(m, m, matching=alias).score == 2.0
    finally:
        MATCHINGS._entries.pop("dp_alias_for_test", None)
    assert "dp_alias_for_test" not in nw.list_matchings()


def test_no_warnings_on_normal_use():
    import torch.nn as nn

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nw.transfer(nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 5)))
