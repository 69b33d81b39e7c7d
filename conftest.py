"""Every Python block of README.md and docs/*.md runs, in order, one namespace per file, as part of
the tests (Sybil).

A block that starts with ``>>>`` is a doctest: what it prints must match what the README
shows. ``<!-- skip: next -->`` before a block skips it: only for blocks that need hardware the
test machines lack (GPUs), whose code path the tests run in another way. The blocks run in a fresh temporary directory, so the files they write (a pool, a
study database) do not land in the checkout.
"""

from __future__ import annotations

import doctest
import os
import tempfile
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _enter_tmp(namespace: dict[str, Any]) -> None:
    namespace["_readme_cwd"] = os.getcwd()
    namespace["_readme_tmp"] = tmp = tempfile.TemporaryDirectory(prefix="nas-warmstart-readme-")
    os.chdir(tmp.name)


def _leave_tmp(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_readme_cwd"])
    namespace["_readme_tmp"].cleanup()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    setup=_enter_tmp,
    teardown=_leave_tmp,
).pytest()


# ------------------------------------------------------------------------------ the two tiers
# `make test` runs the fast tier (pyproject's addopts leave out `slow`); `make test-all` adds
# the slow tier. The fast tier still touches every stage once: DPIAT, the pool, training and
# guidance, Optuna, one small Ray run, conversion, one tiny end-to-end run (tests/test_pipeline.py)
# and the README's blocks. What is slow, and why, is listed here so the split is seen in one place;
# a listed id is a prefix of pytest's node id (a file, a test, or one parametrization).
SLOW = {
    # long documentation blocks: the Ray cluster guide starts clusters, the pipeline page runs a job
    "docs/cluster.md": "starts local Ray clusters",
    "docs/pipeline.md": "runs the whole job",
    # whole pipeline runs, their resume and Ctrl-C (tests/test_pipeline.py keeps one tiny run fast)
    "tests/test_run.py": "whole pipeline runs through the command, twice, with SIGINT",
    # the two-node cluster and Ray Train (tests/test_reuse.py keeps one small Ray run fast)
    "tests/test_ray.py::test_warm_started_tune_search_on_two_nodes": "two-node Tune search",
    "tests/test_ray.py::test_a_trial_that_raises": "Tune restarts from a checkpoint",
    "tests/test_ray.py::test_register_checkpoints_callback": "a Tune run",
    "tests/test_ray.py::test_search_ray_driver_killed": "SIGKILL of a driver subprocess, then resume",
    "tests/test_ray.py::test_search_ray_joins_a_cluster": "a Tune run on the cluster",
    "tests/test_ray.py::test_a_local_pool_on_a_directory_every_node_mounts": "a Tune run on two nodes",
    "tests/test_ray.py::test_search_ray_ctrl_c": "SIGINT of a Tune driver subprocess, then resume",
    "tests/test_ray_convert.py": "Ray Train conversions on two workers",
    "tests/test_contracts.py::test_a_ray_pool_answers": "a Ray actor's pool against the directory",
    "tests/test_examples.py::test_ray_tune_search": "a Tune example in a subprocess",
    "tests/test_examples.py::test_optuna_quickstart": "an example study in a subprocess",
    "tests/test_examples.py::test_optuna_own_model": "an example study in a subprocess",
    # killed and interrupted subprocess runs, several processes on one storage
    "tests/test_optuna.py::test_killed_search_resumes": "SIGKILL of a search subprocess",
    "tests/test_optuna.py::test_two_processes": "two search processes on one storage",
    "tests/test_optuna.py::test_workers_started_together": "several search processes at once",
    "tests/test_cli.py::test_search_ctrl_c": "SIGINT of a search subprocess",
    "tests/test_cli.py::test_a_read_only_pool_can_be_listed": "every pool command on a read-only copy",
    "tests/test_hostile_search.py::test_same_study_name_in_another_storage": "two searches in subprocesses",
    "tests/test_hostile_search.py::test_a_killed_search": "SIGKILL of a search subprocess",
    "tests/test_hostile_recovery.py::test_the_damage_chain_through_the_command": "every pool command in turn",
    "tests/test_own_models.py::test_cli_ranks_shows_and_transfers": "three commands in subprocesses",
    # conversion: one killed-and-resumed schedule and one pair per schedule stay fast
    "tests/test_convert.py::test_killed_conversion_resumes_with_the_same_result[independent": "a second schedule",
    "tests/test_convert.py::test_killed_conversion_resumes_with_the_same_result[recast": "a third schedule",
    "tests/test_convert.py::test_every_schedule_converts_every_pair[resnet->convnet": "more pairs",
    "tests/test_convert.py::test_every_schedule_converts_every_pair[convnet->mlp": "more pairs",
    "tests/test_convert.py::test_every_schedule_converts_every_pair[vit->vit": "more pairs",
}


#: the pool contract run through a Ray actor (every contract test, parametrized [RayPool]).
SLOW_PARAMETERS = {"tests/test_contracts.py": "[RayPool"}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    import pytest

    for item in items:
        node = item.nodeid.replace("\\", "/")
        file = node.partition("::")[0]
        if any(node.startswith(prefix) for prefix in SLOW) or (
                file in SLOW_PARAMETERS and SLOW_PARAMETERS[file] in node):
            item.add_marker(pytest.mark.slow)
