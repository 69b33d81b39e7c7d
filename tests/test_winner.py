"""The winner rule: best trial, Pareto front, knee (oracles: brute force and hand geometry)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from nas_warmstart import InvalidArgumentError
from nas_warmstart.search.winner import BEST_RULE, KNEE_RULE, choose_winner, dominates, pareto_front

MAX_MIN = ["maximize", "minimize"]


def test_single_objective_best_and_ties():
    pts = [(0, [0.5]), (1, [0.9]), (2, [0.9]), (3, [0.1])]
    assert choose_winner(pts, ["maximize"]) == (1, BEST_RULE)
    assert choose_winner(pts, ["minimize"])[0] == 3


def test_front_equals_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 12)
        pts = [(i, [rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([1, 2, 3, 4])]) for i in range(n)]
        want = []
        for i, a in pts:  # dominated: some other point no worse in both and better in one
            if not any(b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1]) for _, b in pts):
                want.append(i)
        assert pareto_front(pts, MAX_MIN) == want


def test_dominates():
    assert dominates([0.9, 1], [0.8, 2], MAX_MIN)
    assert not dominates([0.9, 1], [0.9, 1], MAX_MIN)
    assert not dominates([0.9, 3], [0.8, 2], MAX_MIN)


def test_knee_of_an_l_shaped_front():
    # accuracy up, params down: (0.90, 10) gives almost the best accuracy at a tenth of the size
    pts = [(0, [0.95, 100.0]), (1, [0.90, 10.0]), (2, [0.50, 1.0]), (3, [0.80, 50.0])]  # 3 is dominated by 1
    number, rule = choose_winner(pts, MAX_MIN)
    assert (number, rule) == (1, KNEE_RULE)


def test_knee_matches_hand_computed_distances():
    pts = [(0, [1.0, 4.0]), (1, [0.7, 2.0]), (2, [0.6, 1.0]), (3, [0.2, 0.0])]
    # scaled over the front to [0, 1], larger better: acc (v-0.2)/0.8, size (4-v)/4
    scaled = {0: (1.0, 0.0), 1: (0.625, 0.5), 2: (0.5, 0.75), 3: (0.0, 1.0)}
    # the line through (1, 0) and (0, 1) is x + y = 1; distance (x + y - 1) / sqrt(2)
    dist = {k: (x + y - 1) / math.sqrt(2) for k, (x, y) in scaled.items()}
    assert max(dist, key=dist.get) == 2
    assert choose_winner(pts, MAX_MIN)[0] == 2


def test_knee_is_a_front_point_and_independent_of_order():
    rng = random.Random(1)
    for _ in range(30):
        pts = [(i, [rng.random(), rng.random() * 100]) for i in range(rng.randint(1, 9))]
        w = choose_winner(pts, MAX_MIN)[0]
        assert w in pareto_front(pts, MAX_MIN)
        for perm in itertools.islice(itertools.permutations(pts), 5):
            assert choose_winner(list(perm), MAX_MIN)[0] == w


def test_two_point_front_takes_the_one_nearest_the_ideal():
    pts = [(0, [0.9, 10.0]), (1, [0.5, 9.0])]
    # scaled: 0 -> (1, 0), 1 -> (0, 1): equal distance, the lower number wins
    assert choose_winner(pts, MAX_MIN)[0] == 0


def test_bad_input():
    with pytest.raises(InvalidArgumentError, match="no finished trial"):
        choose_winner([], ["maximize"])
    with pytest.raises(InvalidArgumentError, match="finite"):
        choose_winner([(0, [float("nan")])], ["maximize"])
    with pytest.raises(InvalidArgumentError, match="maximize"):
        choose_winner([(0, [1.0])], ["up"])
