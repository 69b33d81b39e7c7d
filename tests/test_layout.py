"""The package's shape: small modules, one curated top level, and the old names of release 0.1
still working for one release with a warning that says the new name."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest
from torch import nn

import nas_warmstart as nw
from nas_warmstart import dpiat
from nas_warmstart._deprecated import MOVED, RENAMED
from nas_warmstart.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


# ------------------------------------------------------------------------------ small modules


def test_no_module_is_longer_than_600_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for folder in ("nas_warmstart", "search_spaces")
        for path in sorted((ROOT / folder).rglob("*.py"))
    }
    assert len(sizes) > 50  # the walk found the package
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"split these by concept (at most {MAX_LINES} lines each): {too_long}"


# ------------------------------------------------------------------------------ the top level


def test_the_top_level_names_are_sorted_and_all_exist_without_a_warning():
    assert nw.__all__ == sorted(nw.__all__)
    assert len(set(nw.__all__)) == len(nw.__all__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of them is a deprecated alias
        missing = [name for name in nw.__all__ if not hasattr(nw, name)]
    assert not missing


def test_the_top_level_holds_what_users_call_and_no_dpiat_internal():
    internals = set(dpiat.__all__) - {"TransferReport"}  # transfer's result is at both places
    assert not internals & set(nw.__all__)
    assert set(MOVED) <= internals  # every moved name has its new home in nas_warmstart.dpiat
    for name in ("similarity", "similarity_matrix", "rank", "transfer", "warm_start", "fit", "evaluate",
                 "convert", "run", "export_model", "Pool", "LocalPool", "ArchSpec", "NasWarmstartError"):
        assert name in nw.__all__, name


# ------------------------------------------------------------------------------ old names


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_a_renamed_name_is_the_new_object_with_a_warning(old, new):
    with pytest.warns(DeprecationWarning, match=rf"nas_warmstart\.{old} is now nas_warmstart\.{new};"):
        assert getattr(nw, old) is getattr(nw, new)


def test_model_zoo_and_zoo_error_still_work():
    with pytest.warns(DeprecationWarning, match="ModelZoo is now nas_warmstart.LocalPool"):
        assert nw.ModelZoo is nw.LocalPool
    with pytest.warns(DeprecationWarning, match="ZooError is now nas_warmstart.PoolError"):
        assert nw.ZooError is nw.PoolError
    with pytest.warns(DeprecationWarning, match="ZooEntry is now nas_warmstart.LocalPoolEntry"):
        assert nw.ZooEntry is nw.LocalPoolEntry


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_moved_dpiat_name_still_works_at_the_top_with_a_warning_naming_its_place(name):
    with pytest.warns(DeprecationWarning, match=rf"nas_warmstart\.{name} is now nas_warmstart\.dpiat\.{name} "):
        assert getattr(nw, name) is getattr(dpiat, name)


def test_a_moved_name_imports_from_the_top_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"from nas_warmstart\.dpiat import signature"):
        from nas_warmstart import signature
    assert signature is dpiat.signature


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'ModelZ00'"):
        nw.ModelZ00  # noqa: B018


def test_the_old_pool_module_imports_with_a_warning():
    import nas_warmstart.pool as pool_package

    name = "nas_warmstart.pool.zoo"
    before = sys.modules.pop(name, None)  # so that the import runs the module again
    try:
        with pytest.warns(DeprecationWarning, match=r"nas_warmstart\.pool\.zoo is now nas_warmstart\.pool\.local"):
            zoo = importlib.import_module(name)
        with pytest.warns(DeprecationWarning, match="ModelZoo is now"):
            assert zoo.ModelZoo is nw.LocalPool
    finally:
        if before is not None:
            sys.modules[name] = before
            pool_package.zoo = before
        else:
            sys.modules.pop(name, None)
            vars(pool_package).pop("zoo", None)


# ------------------------------------------------------------------------------ the old CLI words


@pytest.fixture
def small_pool(tmp_path):
    path = tmp_path / "pool"
    pool = nw.LocalPool(path)
    for name, width in (("a", 4), ("b", 8)):  # transfer sources without a builder: fast to add
        pool.add(name, nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2)), dataset="digits")
    pool.close()
    return str(path)


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_zoo_list_is_pool_list_with_one_warning_line(small_pool, capsys):
    new = _run(["pool", "list", small_pool], capsys)
    old = _run(["zoo", "list", small_pool], capsys)
    assert new[0] == old[0] == 0 and new[2] == ""
    assert old[1] == new[1] and "a " in new[1] and "b " in new[1]
    assert old[2].count("\n") == 1 and old[2].startswith("nas-warmstart: warning: ")
    assert "`nas-warmstart pool ...`" in old[2] and "removed in the next release" in old[2]


def test_the_zoo_option_is_the_pool_option_with_one_warning_line(small_pool, capsys):
    new = _run(["rank", "pool:a", "--pool", small_pool, "--json"], capsys)
    old = _run(["rank", "pool:a", "--zoo", small_pool, "--json"], capsys)
    assert new[0] == old[0] == 0 and new[2] == ""
    assert old[1] == new[1] and '"name": "a"' in new[1]
    assert old[2].count("\n") == 1 and "--zoo is deprecated" in old[2] and "use --pool DIR" in old[2]


def _private_imports(root: Path) -> list[str]:
    """``from X import _name`` in a package module (dunder names and whole modules aside)."""
    import ast

    found = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{f.relative_to(root.parent)}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                          f"import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


@pytest.mark.parametrize("package", ["nas_warmstart", "search_spaces"])
def test_no_module_imports_another_modules_private_names(package):
    """A name with a leading underscore is its module's own; what another module needs is public."""
    assert _private_imports(ROOT / package) == []


def test_the_private_import_check_sees_one(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("_hidden = 1\n__version__ = '1'\n")
    (pkg / "b.py").write_text("from .a import __version__\nfrom .a import _hidden as h\n")
    assert _private_imports(pkg) == ["pkg/b.py:2: from .a import _hidden"]
