"""Tests for recbole_hetcomp.distill.kd (RD, RRD, DCD, CL-DRD, and our earlier readings of the last two); expected
values are worked out by hand below."""

import math
import re

import pytest
import torch

from recbole_hetcomp.distill import kd
from recbole_hetcomp.distill.kd import (
    CLDRD_GROUP_STAGES,
    CLDRD_STAGES,
    cldrd_group_ends,
    cldrd_group_loss,
    cldrd_labels,
    cldrd_loss,
    dcd_correction,
    dcd_discrepancies,
    dcd_item_lists,
    dcd_overview_loss,
    dcd_sample,
    rd_loss,
    rrd_loss,
)

E = math.exp
L = math.log


def _t(rows, dtype=torch.long):
    return torch.tensor(rows, dtype=dtype)


def _s(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _mask(n_items, train_rows):
    m = torch.zeros(len(train_rows), n_items, dtype=torch.bool)
    for u, items in enumerate(train_rows):
        m[u, list(items)] = True
    return m


def _logsig(x):
    return -math.log1p(math.exp(-x))


def _close(got, expected):
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------
# RD.  Case R: I = 6, training item {0}; unobserved 1..5 with scores
#   item: 1    2    3    4    5
#   a   : 0.5  1.5  1.0  3.0  2.0   -> student ranks (1-based): 4:1, 5:2, 2:3, 3:4, 1:5
# T = [1, 2, 3]: teacher positions r = 1, 2, 3; rank_S = 5, 3, 4; rank_S - r = 4, 1, 1.
# ---------------------------------------------------------------------------
R_SCORES = [[0.0, 0.5, 1.5, 1.0, 3.0, 2.0]]
R_TOP = [[1, 2, 3]]


def _case_r(scores=R_SCORES, top=R_TOP):
    return _s(scores), _t(top), _mask(6, [{0}])


def test_rd_position_weight_by_hand():
    # w_a(r) = e^{-r/2} / (e^{-1/2} + e^{-1} + e^{-3/2}); loss = -sum w_a(r) log sigmoid(a_{T_r})
    z = E(-0.5) + E(-1.0) + E(-1.5)
    expected = -(E(-0.5) * _logsig(0.5) + E(-1.0) * _logsig(1.5) + E(-1.5) * _logsig(1.0)) / z
    _close(rd_loss(*_case_r(), lam=2.0, dynamic=False), expected)


def test_rd_hybrid_weight_by_hand():
    # lam = 1, mu = 0.5: w_b = tanh(0.5 * 4), tanh(0.5 * 1), tanh(0.5 * 1); w ∝ e^{-r} * w_b
    p = [E(-1) * math.tanh(2.0), E(-2) * math.tanh(0.5), E(-3) * math.tanh(0.5)]
    z = sum(p)
    expected = -(p[0] * _logsig(0.5) + p[1] * _logsig(1.5) + p[2] * _logsig(1.0)) / z
    _close(rd_loss(*_case_r(), lam=1.0, mu=0.5), expected)


def test_rd_defaults_are_lam_1_mu_01():
    p = [E(-1) * math.tanh(0.4), E(-2) * math.tanh(0.1), E(-3) * math.tanh(0.1)]
    expected = -(p[0] * _logsig(0.5) + p[1] * _logsig(1.5) + p[2] * _logsig(1.0)) / sum(p)
    _close(rd_loss(*_case_r()), expected)


def test_rd_ties_rank_in_the_items_favour_and_an_all_zero_hybrid_gives_0():
    # All scores 0: every unobserved item has rank 1, so rank_S - r <= 0 at every position: w_b = 0
    # everywhere and the user contributes 0. Position weights alone still give log 2 (-log sigmoid(0)).
    scores, top, train = torch.zeros(1, 6), _t([[1, 2]]), _mask(6, [{0}])
    _close(rd_loss(scores, top, train), 0.0)
    _close(rd_loss(scores, top, train, dynamic=False), L(2))


def test_rd_static_weight_ignores_the_students_ranks_and_dynamic_does_not():
    moved = [[0.0, 0.5, 1.5, 1.0, -3.0, -2.0]]  # only non-target items change: ranks of T change
    static = rd_loss(*_case_r(), dynamic=False), rd_loss(*_case_r(moved), dynamic=False)
    assert static[0].item() == pytest.approx(static[1].item(), rel=1e-6)
    dynamic = rd_loss(*_case_r(), mu=0.5), rd_loss(*_case_r(moved), mu=0.5)
    # moved: ranks 1:3, 2:1, 3:2 -> rank_S - r = 2, -1, -1: only position 1 keeps a weight
    _close(dynamic[1], -_logsig(0.5))
    assert dynamic[0].item() != pytest.approx(dynamic[1].item(), rel=1e-3)


# ---------------------------------------------------------------------------
# RRD.  Case Q: I = 6, training items {0, 5}; T = [3, 1]; tail Unobs \ T = {2, 4}.
#   a = [9.0, 0.2, -0.3, 1.1, 0.7, 5.0]
# ---------------------------------------------------------------------------
Q_SCORES = [[9.0, 0.2, -0.3, 1.1, 0.7, 5.0]]


def _case_q(scores=Q_SCORES, top=((3, 1),)):
    return _s(scores), _t([list(r) for r in top]), _mask(6, [{0, 5}])


def test_rrd_by_hand():
    expected = -(1.1 - L(E(1.1) + E(0.2) + E(-0.3) + E(0.7))) - (0.2 - L(E(0.2) + E(-0.3) + E(0.7)))
    _close(rrd_loss(*_case_q()), expected)


def test_rrd_ignores_the_order_of_uninteresting_items_but_not_of_the_list():
    base = rrd_loss(*_case_q()).item()
    permuted = [[9.0, 0.2, 0.7, 1.1, -0.3, 5.0]]  # items 2 and 4 swap scores
    assert rrd_loss(*_case_q(permuted)).item() == pytest.approx(base, rel=1e-6)
    swapped = [[9.0, 1.1, -0.3, 0.2, 0.7, 5.0]]  # the two list items swap scores
    assert rrd_loss(*_case_q(swapped)).item() > base + 0.1


# ---------------------------------------------------------------------------
# CL-DRD.  Case Q with T = [3, 1, 4]; Unobs = {1, 2, 3, 4}.
# ---------------------------------------------------------------------------
def test_cldrd_groups_by_hand():
    case = _case_q(top=((3, 1, 4),))
    # groups [1, 3]: G1 = {3}, G2 = {1, 4}, R = {2}
    expected = (-(1.1 - L(E(1.1) + E(0.2) + E(0.7) + E(-0.3)))
                - (0.2 - L(E(0.2) + E(-0.3)))
                - (0.7 - L(E(0.7) + E(-0.3))))
    _close(cldrd_group_loss(*case, [1, 3]), expected)
    # groups [2]: G1 = {3, 1}; item 4 is past the last end, so it joins R = {2, 4}
    expected = -(1.1 - L(E(1.1) + E(-0.3) + E(0.7))) - (0.2 - L(E(0.2) + E(-0.3) + E(0.7)))
    _close(cldrd_group_loss(*case, [2]), expected)
    # groups [2, 10]: the end 10 is cut to K = 3 -> G1 = {3, 1}, G2 = {4}, R = {2}
    expected = (-(1.1 - L(E(1.1) + E(0.7) + E(-0.3)))
                - (0.2 - L(E(0.2) + E(0.7) + E(-0.3)))
                - (0.7 - L(E(0.7) + E(-0.3))))
    _close(cldrd_group_loss(*case, [2, 10]), expected)


def test_cldrd_no_order_within_a_group_but_order_between_groups():
    case = _case_q(top=((3, 1, 4),))
    base = cldrd_group_loss(*case, [2, 3]).item()
    within = [[9.0, 1.1, -0.3, 0.2, 0.7, 5.0]]  # items 3 and 1 (same group) swap scores
    assert cldrd_group_loss(*_case_q(within, ((3, 1, 4),)), [2, 3]).item() == pytest.approx(base, rel=1e-6)
    across = [[9.0, 0.7, -0.3, 1.1, 0.2, 5.0]]  # items 1 (group 1) and 4 (group 2) swap: now in group order
    assert cldrd_group_loss(*_case_q(across, ((3, 1, 4),)), [2, 3]).item() < base - 0.1


def test_cldrd_with_singleton_groups_equals_rrd():
    scores, top, train = _random_batch(seed=3)
    k = top.shape[1]
    got = cldrd_group_loss(scores, top, train, list(range(1, k + 1)))
    assert got.item() == pytest.approx(rrd_loss(scores, top, train).item(), rel=1e-5)
    assert cldrd_group_loss(scores, top, train, cldrd_group_ends(CLDRD_GROUP_STAGES - 1, k)).item() == pytest.approx(got.item())


def test_cldrd_group_schedule():
    assert cldrd_group_ends(0, 50) == [5, 50]
    assert cldrd_group_ends(1, 50) == [1, 2, 3, 4, 5, 25, 50]
    assert cldrd_group_ends(2, 50) == list(range(1, 51))
    assert cldrd_group_ends(7, 50) == cldrd_group_ends(2, 50)
    assert cldrd_group_ends(0, 100) == [10, 100]
    assert [cldrd_group_ends(s, 3) for s in range(3)] == [[3], [1, 3], [1, 2, 3]]
    assert [cldrd_group_ends(s, 1) for s in range(3)] == [[1], [1], [1]]
    for k in range(1, 61):
        stages = [cldrd_group_ends(s, k) for s in range(CLDRD_GROUP_STAGES)]
        for coarse, fine in zip(stages, stages[1:]):
            assert set(coarse) <= set(fine), (k, coarse, fine)
        for ends in stages:
            assert ends == sorted(set(ends)) and ends[-1] == k and ends[0] >= 1


@pytest.mark.parametrize("bad", [[], [0, 2], [3, 2], [2, 2]])
def test_cldrd_rejects_bad_groups(bad):
    with pytest.raises(ValueError, match=re.escape(f"strictly increasing list of positive ends, got {bad}")):
        cldrd_group_loss(*_case_q(), bad)


def test_cldrd_groups_rejects_bad_arguments():
    for stage, k, what in [(-1, 10, "stage must be an int >= 0, got -1"), (0, 0, "k must be an int >= 1, got 0"),
                           (1.5, 10, "stage must be an int >= 0, got 1.5"), (0, 2.0, "k must be an int >= 1, got 2.0")]:
        with pytest.raises(ValueError, match=re.escape(what)):
            cldrd_group_ends(stage, k)


# ---------------------------------------------------------------------------
# DCD.  Case D: I = 6, training item {0}; T = [1, 2, 3]
#   item:  1     2     3    4    5
#   a   :  0.5  -0.5   1.0  3.0  1.8  -> student ranks 4:1, 5:2, 3:3, 1:4, 2:5
# Teacher: 1 -> [1, 1], 2 -> [2, 2], 3 -> [3, 3]; 4 and 5 tied after the list -> [4, 5].
#   d_up = rho - hi : item 1: 4 - 1 = 3, item 2: 5 - 2 = 3, item 3: 0   -> P = [1, 2]
#   d_down = lo - rho: item 4: 4 - 1 = 3, item 5: 4 - 2 = 2             -> N = {4, 5}
# ---------------------------------------------------------------------------
D_SCORES = [[0.0, 0.5, -0.5, 1.0, 3.0, 1.8]]


def _case_d():
    return _s(D_SCORES), _t([[1, 2, 3]]), _mask(6, [{0}])


def test_dcd_user_side_by_hand():
    expected = -(0.5 - L(E(0.5) + E(-0.5) + E(3.0) + E(1.8))) - (-0.5 - L(E(-0.5) + E(3.0) + E(1.8)))
    _close(dcd_overview_loss(*_case_d()), expected)
    _close(dcd_overview_loss(*_case_d(), item_side=False), expected)  # one user: no item-side term


def test_dcd_sampling_draws_from_the_mis_ranked_candidates_only():
    s = dict(enumerate(D_SCORES[0]))
    combos = {(p, n): L(1 + E(s[n] - s[p])) for p in (1, 2) for n in (4, 5)}  # listmle([p], {n})
    assert len({round(v, 6) for v in combos.values()}) == 4
    seen = set()
    for seed in range(20):
        got = dcd_overview_loss(*_case_d(), k=1, generator=torch.Generator().manual_seed(seed)).item()
        match = [c for c, v in combos.items() if v == pytest.approx(got, rel=1e-5)]
        assert len(match) == 1, (seed, got)
        seen.add(match[0][0])
        again = dcd_overview_loss(*_case_d(), k=1, generator=torch.Generator().manual_seed(seed)).item()
        assert again == got
    assert seen == {1, 2}
    # k at least the number of candidates keeps them all: the deterministic value
    full = dcd_overview_loss(*_case_d()).item()
    assert dcd_overview_loss(*_case_d(), k=2, generator=torch.Generator().manual_seed(0)).item() == pytest.approx(full)


# Case DD, two users, I = 6.  user 0: training {0}, T = [3, 1]; user 1: training {0, 5}, T = [3, 2].
# Consistent scores: each user's own order agrees with its list, and per item the users agree:
#   item 3: both at position 1 (tied); item 1: user 0 listed (pos 2), user 1 not -> user 0 first;
#   item 2: user 1 listed, user 0 not -> user 1 first; item 4: nobody lists it; item 5: user 0 only.
DD_CONSISTENT = [[0.0, 1.0, -1.0, 2.0, -2.0, -3.0],
                 [0.0, 0.5, 2.0, 3.0, -1.0, 9.0]]
DD_BROKEN = [[0.0, 1.0, -1.0, 2.0, -2.0, -3.0],
             [0.0, 1.5, 2.0, 3.0, -1.0, 9.0]]  # user 1 now scores item 1 above user 0


def _case_dd(scores):
    return _s(scores), _t([[3, 1], [3, 2]]), _mask(6, [{0}, {0, 5}])


def test_dcd_is_zero_when_the_student_agrees_with_the_teacher():
    _close(dcd_overview_loss(*_case_dd(DD_CONSISTENT)), 0.0)
    # a tie in the teacher's order accepts either student order: swap the users on item 3
    tied = [row[:] for row in DD_CONSISTENT]
    tied[0][3], tied[1][3] = 3.5, 3.0
    _close(dcd_overview_loss(*_case_dd(tied)), 0.0)


def test_dcd_item_side_by_hand():
    # User sides still agree (user 1: 3.0 > 2.0 > 1.5 > -1.0). Item 1 over users {0, 1}: teacher
    # ranks user 0 first ([1, 1]), user 1 after ([2, 2]); the student ranks user 1 first:
    # user 0 has d_up = 2 - 1 = 1 (P = [user 0]), user 1 has d_down = 2 - 1 = 1 (N = {user 1}).
    expected = -(1.0 - L(E(1.0) + E(1.5)))
    _close(dcd_overview_loss(*_case_dd(DD_BROKEN)), expected)
    _close(dcd_overview_loss(*_case_dd(DD_BROKEN), item_side=False), 0.0)
    # the item side couples the batch's users: each user alone has loss 0
    s, top, train = _case_dd(DD_BROKEN)
    singles = sum(dcd_overview_loss(s[u:u + 1], top[u:u + 1], train[u:u + 1]).item() for u in range(2))
    assert singles == 0.0


def test_dcd_rejects_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("k must be None or an int >= 1, got 0")):
        dcd_overview_loss(*_case_d(), k=0)
    with pytest.raises(ValueError, match=re.escape("eps must be > 0, got 0.0")):
        dcd_overview_loss(*_case_d(), eps=0.0)


def _dcd_case(seed, b, n_items, k, ties, repeats):
    """Random scores (``ties``: small integers, so most ranks are tied, also at every list's depth), training
    items that are listed too, padded rows, one row of padding only and (``repeats``) items listed twice."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        scores = torch.randint(-3, 4, (b, n_items), generator=g).float()
    else:
        scores = torch.empty(b, n_items).uniform_(-5.0, 5.0, generator=g)
    train = torch.rand(b, n_items, generator=g) < 0.2
    train[:, 0] = True
    top = torch.stack([torch.randperm(n_items - 1, generator=g)[:k] + 1 for _ in range(b)])
    if repeats:
        top[:, -1] = top[:, 0]
        top[1, 2] = top[1, 1]
    top[2, k // 2:] = -1
    top[3] = -1
    return scores.requires_grad_(True), top, train


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("repeats", [False, True])
@pytest.mark.parametrize("item_side", [False, True])
def test_dcd_unsampled_path_equals_the_every_cell_path(ties, repeats, item_side):
    # dcd_overview_loss without sampling works on the listed cells and one values-only sort per row; the every-cell path
    # (positions of all [B, I] cells, a full rank of every row) is the definition it must reproduce, with gradients
    from recbole_hetcomp.distill import kd

    for seed in range(4):
        scores, top, train = _dcd_case(seed, b=7, n_items=40, k=9, ties=ties, repeats=repeats)
        got = dcd_overview_loss(scores, top, train, item_side=item_side)
        (grad,) = torch.autograd.grad(got, scores)
        t, tr, valid = kd._inputs(scores, top, train)
        want = kd._dcd_every_cell(scores, t, valid, tr, None, 0.1, None, item_side)
        (want_grad,) = torch.autograd.grad(want, scores)
        assert want.item() > 0
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        assert torch.allclose(grad, want_grad, atol=1e-6)


def _dcd_by_the_definition(scores, top, train, item_side=True):
    """DCD without sampling, query by query in plain Python, from the module docstring's definitions."""
    s, t, tr = scores.tolist(), top.tolist(), train.tolist()
    b, n_items = len(s), len(s[0])
    first = [{} for _ in range(b)]  # user -> {item: its first position}
    for u in range(b):
        for r, i in enumerate(t[u]):
            if i >= 0 and not tr[u][i] and i not in first[u]:
                first[u][i] = r + 1

    def side(values, positions):  # one query: candidates' scores and teacher positions (None: not eligible)
        cand = [c for c in range(len(values)) if positions[c] is not None]
        pos = {c: positions[c] for c in cand}
        lo = {c: 1 + sum(pos[d] < pos[c] for d in cand) for c in cand}
        hi = {c: sum(pos[d] <= pos[c] for d in cand) for c in cand}
        rho = {c: 1 + sum(values[d] > values[c] for d in cand) for c in cand}
        p = sorted((c for c in cand if rho[c] > hi[c]), key=lambda c: (lo[c], rho[c], c))
        z = sum(math.exp(values[c]) for c in cand if lo[c] > rho[c])
        return -sum(values[p[j]] - math.log(sum(math.exp(values[q]) for q in p[j:]) + z) for j in range(len(p)))

    unlisted = len(t[0]) + 1  # an eligible candidate outside the list: tied after it
    total = sum(side(s[u], [None if tr[u][i] else first[u].get(i, unlisted) for i in range(n_items)])
                for u in range(b))
    if item_side and b > 1:
        for i in sorted({i for u in range(b) for i in t[u] if i >= 0}):
            total += side([s[u][i] for u in range(b)], [None if tr[u][i] else first[u].get(i, unlisted)
                                                        for u in range(b)])
    return total


@pytest.mark.parametrize("ties", [False, True])
def test_dcd_equals_its_definition_computed_query_by_query(ties):
    for seed in range(3):
        scores, top, train = _dcd_case(seed, b=6, n_items=25, k=7, ties=ties, repeats=seed == 1)
        scores = scores.detach().double()
        for item_side in (False, True):
            want = _dcd_by_the_definition(scores, top, train, item_side)
            assert want > 0
            assert dcd_overview_loss(scores, top, train, item_side=item_side).item() == pytest.approx(want, rel=1e-9)


def test_dcd_unsampled_path_on_a_catalogue_sized_batch():
    from recbole_hetcomp.distill import kd

    scores, top, train = _dcd_case(0, b=64, n_items=600, k=50, ties=False, repeats=False)
    got = dcd_overview_loss(scores, top, train)
    t, tr, valid = kd._inputs(scores, top, train)
    assert got.item() == pytest.approx(kd._dcd_every_cell(scores, t, valid, tr, None, 0.1, None, True).item(),
                                       rel=1e-6)


# ---------------------------------------------------------------------------
# Properties shared by every loss
# ---------------------------------------------------------------------------
def _random_batch(seed, b=3, n_items=12, k=4, low=-3.0, high=3.0):
    """Random scores; training items (column 0 always); T = k distinct unobserved items, row 1 padded."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.empty(b, n_items).uniform_(low, high, generator=g)
    train = torch.rand(b, n_items, generator=g) < 0.3
    train[:, 0] = True
    rows = []
    for u in range(b):
        free = (~train[u]).nonzero().flatten()
        rows.append(free[torch.randperm(len(free), generator=g)[:k]].tolist())
    top = _t(rows)
    top[1, -2:] = -1
    return scores, top, train


LOSSES = {
    "rd": lambda s, t, m: rd_loss(s, t, m, mu=0.5),
    "rd_static": lambda s, t, m: rd_loss(s, t, m, dynamic=False),
    "rrd": rrd_loss,
    "cldrd": lambda s, t, m: cldrd_group_loss(s, t, m, [1, 3]),
    "dcd_user": lambda s, t, m: dcd_overview_loss(s, t, m, item_side=False),
    "dcd": dcd_overview_loss,
}
ADDITIVE = ["rd", "rd_static", "rrd", "cldrd", "dcd_user"]  # the DCD item side couples the batch's users


@pytest.mark.parametrize("name", list(LOSSES))
def test_padding_contributes_nothing(name):
    fn = LOSSES[name]
    scores, top, train = _random_batch(seed=1)
    padded = torch.cat([top, torch.full((top.shape[0], 2), -1)], 1)
    assert fn(scores, padded, train).item() == pytest.approx(fn(scores, top, train).item(), rel=1e-6)
    # a row of padding only: that user contributes nothing
    empty = top.clone()
    empty[0] = -1
    rest = fn(scores[1:], top[1:], train[1:]).item()
    if name in ADDITIVE:
        assert fn(scores, empty, train).item() == pytest.approx(rest, rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_training_items_appear_in_no_term(name):
    fn = LOSSES[name]
    scores, top, train = _random_batch(seed=2)
    scores.requires_grad_(True)
    loss = fn(scores, top, train)
    loss.backward()
    assert torch.all(scores.grad[train] == 0)
    assert bool(scores.grad.abs().sum() > 0)
    moved = scores.detach().clone()
    moved[train] = torch.linspace(-40, 40, int(train.sum()))
    assert fn(moved, top, train).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_are_finite_at_extreme_scores(name):
    fn = LOSSES[name]
    for seed in range(3):
        scores, top, train = _random_batch(seed=10 + seed, n_items=30, k=6, low=-40.0, high=40.0)
        scores[0, :10] = 40.0  # ties at the bound
        scores[2, :10] = -40.0
        scores.requires_grad_(True)
        loss = fn(scores, top, train)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", ADDITIVE)
def test_loss_is_the_sum_over_users(name):
    fn = LOSSES[name]
    scores, top, train = _random_batch(seed=4, b=2)
    both = fn(scores, top, train)
    singles = sum(fn(scores[u:u + 1], top[u:u + 1], train[u:u + 1]) for u in range(2))
    assert both.item() == pytest.approx(singles.item(), rel=1e-6)
    assert both.dim() == 0 and both.device == scores.device and both.dtype == scores.dtype


@pytest.mark.parametrize("name", list(LOSSES))
def test_float64_and_0_1_train_mask(name):
    fn = LOSSES[name]
    scores, top, train = _random_batch(seed=5)
    expected = fn(scores, top, train).item()
    got = fn(scores.double(), top, train.to(torch.uint8))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_shape_errors():
    scores, top, train = _random_batch(seed=6)
    with pytest.raises(ValueError, match=re.escape("top must be [B, K] with B=3, got (2, 4)")):
        rrd_loss(scores, top[:2], train)
    with pytest.raises(ValueError, match=re.escape("train_mask must be [B, I]=(3, 12), got (3, 5)")):
        rrd_loss(scores, top, train[:, :5])
    with pytest.raises(ValueError, match=re.escape("lam and mu must be > 0, got lam=0.0, mu=0.1")):
        rd_loss(scores, top, train, lam=0.0)
    with pytest.raises(ValueError, match=re.escape("top holds an item id >= I=12")):
        rrd_loss(scores, torch.full_like(top, 99), train)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_match_finite_differences(name):
    # Random scores have no ties, so a small step changes no rank or set: the loss is smooth there.
    fn = LOSSES[name]
    scores, top, train = _random_batch(seed=7)
    x = scores.double().requires_grad_(True)
    assert fn(x, top, train).item() > 0
    assert torch.autograd.gradcheck(lambda z: fn(z, top, train), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_an_empty_target_list_gives_0(name):
    scores, _, train = _random_batch(seed=8)
    got = LOSSES[name](scores, torch.zeros(3, 0, dtype=torch.long), train)
    assert got.dim() == 0 and got.item() == 0.0


def test_ranks_of_eligible_equal_the_sorted_search_with_ties():
    """DCD's one-sort ranks equal 1 + #{eligible values greater} (the searchsorted definition) at every eligible
    entry, ties included (values rounded to a few levels, and clamped scores tie at +-40)."""
    from recbole_hetcomp.distill.kd import _ranks_among, _ranks_of_eligible

    gen = torch.Generator().manual_seed(11)
    values = (torch.randn(7, 50, generator=gen) * 3).round().clamp(-2, 2) * 20
    eligible = torch.rand(7, 50, generator=gen) < 0.7
    want = _ranks_among(values, eligible, values)
    got = _ranks_of_eligible(values, eligible)
    assert torch.equal(got[eligible], want[eligible])
    row = torch.tensor([[3.0, 1.0, 3.0, 2.0, 5.0]])
    assert _ranks_of_eligible(row, torch.ones(1, 5, dtype=torch.bool)).tolist() == [[2, 5, 2, 4, 1]]
    assert _ranks_of_eligible(row, torch.tensor([[True, True, True, False, True]]))[0, [0, 1, 2, 4]].tolist() == [2, 4, 2, 1]


# ---------------------------------------------------------------------------
# DCD in its authors' form: discrepancies over the teacher's list, draws, the correction, item lists.
# List scores [1, 3, 2, 0] in teacher order: the student orders them 3 (col 1), 2 (col 2), 1 (col 0), 0 (col 3),
# so rho = [2, 0, 1, 3] against t = [0, 1, 2, 3]: d = rho - t = [2, -1, -1, 0].
# ---------------------------------------------------------------------------
def test_dcd_discrepancies_by_hand():
    under, over = dcd_discrepancies(_s([[1.0, 3.0, 2.0, 0.0]]), torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert under[0].tolist() == pytest.approx([math.tanh(1.0), 0.0, 0.0, 0.0])
    assert over[0].tolist() == pytest.approx([0.0, math.tanh(0.5), math.tanh(0.5), 0.0])
    # padding ranks after every real entry and weighs 0; equal scores keep the teacher's (column) order
    under, over = dcd_discrepancies(_s([[1.0, 3.0, 9.0], [2.0, 2.0, 2.0]]), _t([[1, 1, 0], [1, 1, 1]]).bool(), 0.5)
    assert under.flatten().tolist() == pytest.approx([math.tanh(0.5), 0.0, 0.0, 0.0, 0.0, 0.0])
    assert over.flatten().tolist() == pytest.approx([0.0, math.tanh(0.5), 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="eps must be > 0"):
        dcd_discrepancies(_s([[1.0]]), torch.ones(1, 1, dtype=torch.bool), 0.0)


def test_dcd_discrepancies_measure_a_tied_block_as_a_whole():
    # teacher ranks [0, 0, 1]: columns 0 and 1 tie (block [0, 1]), column 2 alone; scores [0.1, 0.9, 0.5] give
    # rho = [2, 0, 1]: column 0 is below its block (2 > 1), column 2 above its own (1 < 2), column 1 is inside
    valid = torch.ones(1, 3, dtype=torch.bool)
    under, over = dcd_discrepancies(_s([[0.1, 0.9, 0.5]]), valid, 0.5, ranks=_t([[0, 0, 1]]))
    assert under[0].tolist() == pytest.approx([math.tanh(0.5), 0.0, 0.0])
    assert over[0].tolist() == pytest.approx([0.0, 0.0, math.tanh(0.5)])
    # one block: any student order agrees with the teacher; padding (-1 ranks) stays out
    under, over = dcd_discrepancies(_s([[0.1, 0.5, 0.9, 7.0]]), _t([[1, 1, 1, 0]]).bool(), 0.5,
                                    ranks=_t([[3, 3, 3, -1]]))
    assert not under.any() and not over.any()


def test_dcd_sample_draws_only_positive_weights_and_in_proportion_to_them():
    w = _s([[0.0, 0.5, 0.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
    assert dcd_sample(w, 5).tolist() == [[False, True, False, True], [False] * 4]  # fewer than k: all of them
    g = torch.Generator().manual_seed(0)
    picks = dcd_sample(_s([[0.75, 0.25, 0.0]]).expand(20000, 3).contiguous(), 1, g)
    assert picks.sum(1).eq(1).all() and not picks[:, 2].any()
    assert picks[:, 0].float().mean().item() == pytest.approx(0.75, abs=0.015)
    two = dcd_sample(_s([[0.3, 0.2, 0.1, 0.0]]).expand(100, 4).contiguous(), 2, g)
    assert two.sum(1).eq(2).all() and not two[:, 3].any()  # without replacement
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        dcd_sample(w, 0)


def test_dcd_correction_by_hand():
    # P = columns 0 and 2 in teacher order (scores 0 and 2), N = column 1 (score 1); column 3 is in neither
    a = _s([[0.0, 1.0, 2.0, 0.5]]).requires_grad_()
    under, over = _t([[1, 0, 1, 0]]).bool(), _t([[0, 1, 0, 0]]).bool()
    expected = -(0.0 - L(E(0.0) + E(2.0) + E(1.0))) - (2.0 - L(E(2.0) + E(1.0)))
    _close(dcd_correction(a, under, over), expected)
    # a row without under-ranked entries gives 0, and rows add up
    two = dcd_correction(_s([[0.0, 1.0, 2.0, 0.5], [5.0, 1.0, 0.0, 0.0]]), _t([[1, 0, 1, 0], [0, 0, 0, 0]]).bool(),
                         _t([[0, 1, 0, 0], [1, 0, 0, 0]]).bool())
    _close(two, expected)
    with pytest.raises(ValueError, match="both under- and over-ranked"):
        dcd_correction(a, under, under)


def test_dcd_correction_orders_a_tied_block_of_p_as_the_student_does():
    # columns 0 and 1 tie (ranks 0, 0) and are both under-ranked: P takes them in the student's order, 3 then 1
    a = _s([[1.0, 3.0, 0.0, 2.0]])
    under, over = _t([[1, 1, 0, 0]]).bool(), _t([[0, 0, 1, 0]]).bool()
    tied = -(3.0 - L(E(3.0) + E(1.0) + E(0.0))) - (1.0 - L(E(1.0) + E(0.0)))
    _close(dcd_correction(a, under, over, ranks=_t([[0, 0, 1, 2]])), tied)
    _close(dcd_correction(a, under, over), -(1.0 - L(E(1.0) + E(3.0) + E(0.0))) - (3.0 - L(E(3.0) + E(0.0))))


def test_dcd_correction_matches_finite_differences():
    a = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    under, over = _t([[1, 0, 1, 0, 1]]).bool(), _t([[0, 1, 0, 1, 0]]).bool()
    assert torch.autograd.gradcheck(lambda x: dcd_correction(x, under, over), (a,))


def test_dcd_item_lists_by_hand():
    # item 1: user 1 at position 0, user 0 at 1; item 2: user 0 at 0, user 2 at 1, user 1 at 2 (cut at length 2);
    # item 3: user 2 at 0, user 1 at 1; item 0 is in no list
    top = _t([[2, 1, -1], [1, 3, 2], [3, 2, -1]])
    users, positions = dcd_item_lists(top, 4, 2)
    assert users.tolist() == [[-1, -1], [1, 0], [0, 2], [2, 1]]
    assert positions.tolist() == [[-1, -1], [0, 1], [0, 1], [0, 1]]
    # users 1 and 2 hold item 1 at the same position: tied, in the fixed scrambled order (2 before 1), not by id;
    # the cut at length 1 keeps the first of that order
    users, positions = dcd_item_lists(_t([[-1], [1], [1]]), 2, 3)
    assert users.tolist() == [[-1, -1, -1], [2, 1, -1]] and positions.tolist() == [[-1, -1, -1], [0, 0, -1]]
    assert dcd_item_lists(_t([[-1], [1], [1]]), 2, 1)[0].tolist() == [[-1], [2]]
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        dcd_item_lists(top, 4, 0)


# ---------------------------------------------------------------------------
# CL-DRD in its authors' form: labels per stage, and the position-weighted pairwise loss.
# ---------------------------------------------------------------------------
def test_cldrd_labels_are_the_authors_label_sets_at_30_candidates():
    for stage, (m, mid, low) in enumerate([(5, 12, 13), (10, 10, 10), (20, 5, 5), (30, 0, 0)]):
        expected = [1.0 / r for r in range(1, m + 1)] + [-0.25] * mid + [-0.5] * low
        assert cldrd_labels(stage, 30).tolist() == pytest.approx(expected)
    assert CLDRD_STAGES == 4 and torch.equal(cldrd_labels(9, 30), cldrd_labels(3, 30))
    assert cldrd_labels(0, 4).tolist() == [1.0, -0.25, -0.5, -0.5]  # at least one ordered candidate
    assert cldrd_labels(0, 1).tolist() == [1.0]
    assert [len([x for x in cldrd_labels(0, n).tolist() if x > 0]) for n in (15, 27, 33)] == [3, 5, 6]  # half up
    with pytest.raises(ValueError, match="stage must be an int >= 0"):
        cldrd_labels(-1, 30)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        cldrd_labels(0, 0)


def test_cldrd_loss_by_hand():
    # scores [2, 0, 1]: the student's positions p = 1, 3, 2; labels 1 > 0.5 > -0.25 give the pairs (0, 1), (0, 2)
    # and (1, 2), weighted |1/1 - 1/3|, |1/1 - 1/2| and |1/3 - 1/2|
    scores = _s([[2.0, 0.0, 1.0]])
    labels = torch.tensor([1.0, 0.5, -0.25])
    valid = torch.ones(1, 3, dtype=torch.bool)
    sp = lambda x: L(1 + E(-x))  # noqa: E731
    expected = 2 / 3 * sp(2.0 - 0.0) + 1 / 2 * sp(2.0 - 1.0) + 1 / 6 * sp(0.0 - 1.0)
    _close(cldrd_loss(scores, labels, valid), expected)
    # a padded column takes no part (not in any pair, not in the positions); rows add up; equal labels give 0
    padded = cldrd_loss(_s([[2.0, 9.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]]),
                        torch.tensor([[1.0, 5.0, 0.5, -0.25], [1.0, 1.0, 1.0, 1.0]]),
                        _t([[1, 0, 1, 1], [1, 1, 1, 1]]).bool())
    _close(padded, expected)


def test_cldrd_loss_matches_finite_differences():
    a = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    labels = cldrd_labels(0, 5).to(torch.float64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda x: cldrd_loss(x, labels, valid), (a,))


# ---------------------------------------------------------------------------
# RRD and the CL-DRD group reading go through a hand-fused function (kd._ListsAboveTail); these tests hold it to
# the autograd chain it replaced, written out here from the module's helpers, value and gradient bit for bit.
# ---------------------------------------------------------------------------
def _chain(scores, top, train, fn):
    """``fn(a[L], valid, Z)`` by plain autograd: a = scores - shift (detached row max over Unobs ∪ L), Z the tail's
    exp mass, L the real entries of ``top``."""
    valid = top >= 0
    listed = torch.zeros_like(train)
    rows = torch.arange(top.shape[0]).unsqueeze(1).expand_as(top)
    listed[rows[valid], top[valid]] = True
    a = scores - kd._shift(scores, ~train | listed)
    return fn(a.gather(1, top.clamp(min=0)), valid, kd._tail_mass(a, ~train & ~listed))


def _awkward_batch(dtype, seed):
    """Padding, a listed training item, a row whose column 0 is not a training item, tied scores, scores at the
    clamp, a row of training items only."""
    scores, top, train = _random_batch(seed=seed, b=5, n_items=40, k=8, low=-40.0, high=40.0)
    scores = scores.to(dtype)
    scores[1, :6] = 40.0
    scores[2, 3:9] = scores[2, 2]
    top[0, -3:] = -1
    train[3, top[3, 2]] = True  # on the list and observed: not by contract, handled all the same
    train[4, 0] = False
    top[4, -1] = -1
    train[2] = True
    return scores, top, train


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rrd_fused_equals_the_autograd_chain_bit_for_bit(dtype, seed):
    scores, top, train = _awkward_batch(dtype, seed)
    x = scores.clone().requires_grad_(True)
    y = scores.clone().requires_grad_(True)
    fused = rrd_loss(x, top, train)
    chained = _chain(y, top, train, kd._listmle)
    assert torch.equal(fused, chained)
    (0.3 * fused).backward()  # an upstream gradient other than 1, as kd_weight gives
    (0.3 * chained).backward()
    assert torch.equal(x.grad, y.grad)
    with torch.no_grad():  # the path without a graph: the same number
        assert torch.equal(rrd_loss(scores, top, train), fused.detach())


@pytest.mark.parametrize("groups", [[1, 3], [2, 5, 8], [20]])
def test_cldrd_group_fused_equals_the_autograd_chain_bit_for_bit(groups):
    scores, top, train = _awkward_batch(torch.float32, 3)
    x = scores.clone().requires_grad_(True)
    y = scores.clone().requires_grad_(True)
    fused = cldrd_group_loss(x, top, train, groups)
    n = min(groups[-1], top.shape[1])

    def chained_terms(a_list, valid, z):  # the group loss's formula, as the module states it
        gid = torch.searchsorted(torch.tensor(groups), torch.arange(n), right=True)
        e = kd._masked_exp(a_list, valid)
        mass = e.new_zeros(a_list.shape[0], len(groups)).index_add_(1, gid, e)
        below = torch.flip(torch.cumsum(torch.flip(mass, [1]), 1), [1])
        lower = torch.cat([below[:, 1:], below.new_zeros(a_list.shape[0], 1)], 1)
        denom = e + lower[:, gid] + z.unsqueeze(1)
        return -torch.where(valid, a_list - kd._log(denom), torch.zeros(())).sum()

    chained = _chain(y, top[:, :n], train, chained_terms)
    assert torch.equal(fused, chained)
    (2.5 * fused).backward()
    (2.5 * chained).backward()
    assert torch.equal(x.grad, y.grad)


def test_rrd_fused_backward_can_run_twice_with_the_same_gradient():
    scores, top, train = _awkward_batch(torch.float64, 4)
    x = scores.clone().requires_grad_(True)
    loss = rrd_loss(x, top, train)
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    assert torch.equal(torch.autograd.grad(loss, x)[0], first)
    listed = torch.zeros_like(train)
    listed[2, top[2]] = True
    assert torch.all(first[2][~listed[2]] == 0) and torch.all(first[2][listed[2]] != 0)  # row 2 observes every item


def test_rrd_fused_with_an_infinite_upstream_gradient_still_leaves_training_items_at_0():
    scores, top, train = _awkward_batch(torch.float32, 5)
    x = scores.clone().requires_grad_(True)
    y = scores.clone().requires_grad_(True)
    with torch.autograd.set_detect_anomaly(False):  # on after RecBole's SINE is imported: it would refuse the NaNs
        (rrd_loss(x, top, train) * float("inf")).backward()
        (_chain(y, top, train, kd._listmle) * float("inf")).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0, equal_nan=True)
    listed = torch.zeros_like(train)
    rows = torch.arange(top.shape[0]).unsqueeze(1).expand_as(top)
    listed[rows[top >= 0], top[top >= 0]] = True
    assert torch.all(x.grad[train & ~listed] == 0)


@pytest.mark.parametrize("name", ["rrd", "cldrd"])
def test_fused_losses_refuse_a_second_derivative_loudly(name):
    scores, top, train = _random_batch(seed=9)
    x = scores.double().requires_grad_(True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):  # not silently without this loss's part
        torch.autograd.grad(LOSSES[name](x, top, train) + (x ** 3).sum(), x, create_graph=True)
