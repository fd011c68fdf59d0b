"""Tests for recbole_hetcomp.distill.curriculum; expected values are worked out by hand below."""

import math

import pytest
import torch

import recbole_hetcomp.distill.curriculum as cur
from recbole_hetcomp.distill.curriculum import (
    dkc_done,
    dkc_step,
    dkc_threshold,
    gather_points,
    point_shares,
    ranking_discrepancy,
)

# ---------------------------------------------------------------------------
# Hand-computed position weights for k = 3 (t = position in the student's list):
#   g_0 = 2^(e^0)    - 1 = 2 - 1                 = 1
#   g_1 = 2^(e^-0.1) - 1 = 2^0.9048374 - 1       = 0.8723335
#   g_2 = 2^(e^-0.2) - 1 = 2^0.8187308 - 1       = 0.7638535
#   w_t = g_t / log2(t + 2):
#   w_0 = 1 / 1                                  = 1
#   w_1 = 0.8723335 / log2(3) = 0.8723335 / 1.5849625 = 0.5503811
#   w_2 = 0.7638535 / 2                          = 0.3819268
#   W   = w_0 + w_1 + w_2                        = 1.9323079
# ---------------------------------------------------------------------------
W0 = (2 ** math.exp(0.0) - 1) / math.log2(2)
W1 = (2 ** math.exp(-0.1) - 1) / math.log2(3)
W2 = (2 ** math.exp(-0.2) - 1) / math.log2(4)
W = W0 + W1 + W2
# D = sum of the weights of the student's MISSED positions / W
D_MISS0 = W0 / W  # 0.5175159
D_MISS1 = W1 / W  # 0.2848310
D_MISS2 = W2 / W  # 0.1976532


def test_hand_weights_sanity():
    """The hand constants below are the module's position weights, and their hand-computed values."""
    got = cur._position_weights(3, torch.device("cpu"), torch.float64).tolist()
    assert got == pytest.approx([W0, W1, W2], rel=1e-15)
    assert W0 == pytest.approx(1.0)
    assert W1 == pytest.approx(0.5503811, abs=1e-7)
    assert W2 == pytest.approx(0.3819268, abs=1e-7)
    assert D_MISS0 == pytest.approx(0.5175159, abs=1e-7)
    assert D_MISS1 == pytest.approx(0.2848310, abs=1e-7)
    assert D_MISS2 == pytest.approx(0.1976532, abs=1e-7)


# ---------------------------------------------------------------------------
# ranking_discrepancy
# ---------------------------------------------------------------------------
def test_identical_lists_give_zero():
    s = torch.tensor([[4, 2, 9, 1, 7], [0, 1, 2, 3, 4]])
    d = ranking_discrepancy(s, s.clone(), k=5)
    assert d.dtype == torch.float32 and d.shape == (2,)
    assert d.tolist() == [0.0, 0.0]


def test_disjoint_lists_give_one():
    s = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    t = torch.tensor([[10, 11, 12, 13], [0, 1, 2, 3]])
    assert ranking_discrepancy(s, t, k=4).tolist() == [1.0, 1.0]


def test_hand_built_k3():
    # student [0, 1, 2], teacher [2, 7, 0] -> S = {0, 2, 7}.
    # Hits at t = 0 (item 0) and t = 2 (item 2), miss at t = 1 (item 1):
    # NDCG = (w_0 + w_2) / W = 1.3819268 / 1.9323079 = 0.7151690; D = w_1 / W = 0.2848310.
    s = torch.tensor([[0, 1, 2]])
    t = torch.tensor([[2, 7, 0]])
    d = ranking_discrepancy(s, t, k=3)
    assert d.item() == pytest.approx(1 - (W0 + W2) / W, abs=1e-6)
    assert d.item() == pytest.approx(0.2848310, abs=1e-6)


def test_only_first_k_matter():
    # First 3: student [0, 1, 2], teacher [2, 7, 0]; everything after k differs.
    s = torch.tensor([[0, 1, 2, 7, 50], [0, 1, 2, 99, 98]])
    t = torch.tensor([[2, 7, 0, 1, 51], [2, 7, 0, 40, 41]])
    d = ranking_discrepancy(s, t, k=3)
    # Without the cut, user 0's item 1 would be found at teacher position 3.
    assert d[0].item() == pytest.approx(D_MISS1, abs=1e-6)
    assert d[1].item() == pytest.approx(D_MISS1, abs=1e-6)


def test_teacher_order_is_a_set_student_order_matters():
    s = torch.tensor([[0, 1, 2]])
    # teacher {0, 2, 9} in three orders: D = w_1 / W each (student misses item 1 at t = 1)
    for t in ([0, 2, 9], [9, 2, 0], [2, 9, 0]):
        assert ranking_discrepancy(s, torch.tensor([t]), k=3).item() == pytest.approx(
            D_MISS1, abs=1e-6
        )
    # student [1, 0, 2] against {0, 2, 9}: miss at t = 0 -> D = w_0 / W = 0.5175159
    d = ranking_discrepancy(torch.tensor([[1, 0, 2]]), torch.tensor([[0, 2, 9]]), k=3)
    assert d.item() == pytest.approx(D_MISS0, abs=1e-6)


def test_default_k50_and_chunking(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    u = 37
    s = torch.stack([torch.randperm(200, generator=gen)[:60] for _ in range(u)])
    t = torch.stack([torch.randperm(200, generator=gen)[:60] for _ in range(u)])
    t[0] = s[0]  # user 0 identical in the first 50 -> 0
    full = ranking_discrepancy(s, t)  # k = 50, one chunk
    assert full.shape == (u,) and full[0].item() == 0.0
    assert ((full >= 0) & (full <= 1)).all()
    monkeypatch.setattr(cur, "MAX_CHUNK_ELEMS", 4 * 201)  # map entries: items < 200, so 4 users per chunk
    chunked = ranking_discrepancy(s, t)
    assert torch.equal(full, chunked)


def test_rejects_short_lists():
    with pytest.raises(ValueError, match=r"need 1 <= k <= list lengths, got k=4, lengths 3 and 5"):
        ranking_discrepancy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long), k=4)


# ---------------------------------------------------------------------------
# gather_points, dkc_threshold, point_shares, dkc_done
# ---------------------------------------------------------------------------
def test_gather_points_hand_built():
    # teacher_tops[x, t, u, n] = 1000 x + 100 t + 10 u + n, shape [2, 3, 2, 2]
    x = torch.arange(2).view(2, 1, 1, 1)
    t = torch.arange(3).view(1, 3, 1, 1)
    u = torch.arange(2).view(1, 1, 2, 1)
    n = torch.arange(2).view(1, 1, 1, 2)
    tops = 1000 * x + 100 * t + 10 * u + n
    v = torch.tensor([[0, 2], [1, 0]])
    out = gather_points(tops, v)
    assert out.tolist() == [
        [[0, 1], [210, 211]],  # x=0: (v=0, u=0), (v=2, u=1)
        [[1100, 1101], [1010, 1011]],  # x=1: (v=1, u=0), (v=0, u=1)
    ]
    assert gather_points(tops, v, users=torch.tensor([1])).tolist() == [
        [[210, 211]],
        [[1010, 1011]],
    ]
    assert gather_points(tops, v, users=torch.tensor([1, 0])).tolist() == [
        [[210, 211], [0, 1]],
        [[1010, 1011], [1100, 1101]],
    ]


def test_dkc_threshold_values():
    assert dkc_threshold(10) == pytest.approx(1.05 * 0.995)  # 1.04475
    assert dkc_threshold(19) == pytest.approx(1.05 * 0.995)  # floor(19/10) = 1
    assert dkc_threshold(20) == pytest.approx(1.05 * 0.990025)  # 1.03952625
    assert dkc_threshold(90) > 1.0  # 1.05 * 0.995^9 = 1.0036841
    assert dkc_threshold(100) < 1.0  # 1.05 * 0.995^10 = 0.9986656
    assert dkc_threshold(100) == pytest.approx(0.9986656, abs=1e-7)
    assert dkc_threshold(7, alpha=2.0, p=5) == pytest.approx(2.0 * 0.995)


def test_point_shares_hand_built():
    v = torch.tensor([[0, 0, 1, 3], [2, 2, 2, 2]])
    shares = point_shares(v, 4)
    assert shares.tolist() == [[0.5, 0.25, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0]]
    assert torch.allclose(shares.sum(1), torch.ones(2))


def test_dkc_done():
    assert not dkc_done(torch.tensor([[3, 3], [3, 2]]), 4)
    assert dkc_done(torch.tensor([[3, 3], [3, 3]]), 4)


# ---------------------------------------------------------------------------
# dkc_step on constructed distances (k = 3).  Student list of every user:
# [0, 1, 2].  Point contents and their distance to the student:
#   SAME  = [0, 1, 2] -> D = 0
#   DISJ  = [7, 8, 9] -> D = 1
#   MISS0 = [1, 2, 9] -> D = w_0 / W = 0.5175159
#   MISS1 = [0, 2, 9] -> D = w_1 / W = 0.2848310
#   MISS2 = [0, 1, 9] -> D = w_2 / W = 0.1976532
# ---------------------------------------------------------------------------
SAME, DISJ = [0, 1, 2], [7, 8, 9]
MISS0, MISS1, MISS2 = [1, 2, 9], [0, 2, 9], [0, 1, 9]
STUDENT = [0, 1, 2]


def _tops(points_per_teacher_user):
    """points_per_teacher_user[x][u] = list of T point lists -> tensor [M, T, U, 3]."""
    t = torch.tensor(points_per_teacher_user)  # [M, U, T, 3]
    return t.permute(0, 2, 1, 3).contiguous()


def _student(u):
    return torch.tensor([STUDENT] * u)


def test_first_call_stores_last_only():
    # M = 2, U = 2, T = 3.  Point 1 of each pair sets `last`.
    tops = _tops(
        [
            [[DISJ, MISS1, SAME], [DISJ, DISJ, SAME]],
            [[DISJ, SAME, SAME], [DISJ, MISS0, SAME]],
        ]
    )
    v = torch.zeros(2, 2, dtype=torch.long)
    last = torch.full((2, 2), float("nan"))
    new_v, new_last, adv = dkc_step(_student(2), tops, v, last, 10, first=True, k=3)
    assert new_v.tolist() == [[0, 0], [0, 0]]
    assert not adv.any()
    expected = torch.tensor([[D_MISS1, 1.0], [0.0, D_MISS0]])
    assert torch.allclose(new_last, expected, atol=1e-6)
    assert torch.isnan(last).all()  # input not mutated


def test_ratio_above_threshold_advances():
    # epoch 10: th = 1.05 * 0.995 = 1.04475.
    # point 1 = MISS2 -> now = 0.1976532; last = 0.5 -> ratio = 2.5297 > th -> advance.
    # New v = 1; new last = D(point min(2, 2)) = D(MISS0) = 0.5175159.
    tops = _tops([[[DISJ, MISS2, MISS0]]])
    v = torch.zeros(1, 1, dtype=torch.long)
    last = torch.tensor([[0.5]])
    new_v, new_last, adv = dkc_step(_student(1), tops, v, last, 10, first=False, k=3)
    assert new_v.tolist() == [[1]] and adv.tolist() == [[True]]
    assert new_last.item() == pytest.approx(D_MISS0, abs=1e-6)
    assert v.tolist() == [[0]] and last.tolist() == [[0.5]]  # inputs not mutated


def test_ratio_below_one_advances():
    # point 1 = MISS0 -> now = 0.5175159; last = 0.2 -> ratio = 0.3865 < 1 -> advance.
    # New v = 1; new last = D(point 2) = D(MISS1) = 0.2848310.
    tops = _tops([[[DISJ, MISS0, MISS1]]])
    new_v, new_last, adv = dkc_step(
        _student(1), tops, torch.zeros(1, 1, dtype=torch.long), torch.tensor([[0.2]]), 50,
        first=False, k=3,
    )
    assert new_v.tolist() == [[1]] and adv.tolist() == [[True]]
    assert new_last.item() == pytest.approx(D_MISS1, abs=1e-6)


def test_ratio_in_band_holds_and_keeps_last():
    # epoch 20: th = 1.05 * 0.995^2 = 1.0395263.
    # point 1 = DISJ -> now = 1; last = 1.02 -> ratio 1.02 in [1, 1.0395] -> hold.
    tops = _tops([[[DISJ, DISJ, SAME]]])
    last = torch.tensor([[1.02]])
    new_v, new_last, adv = dkc_step(
        _student(1), tops, torch.zeros(1, 1, dtype=torch.long), last, 20, first=False, k=3
    )
    assert new_v.tolist() == [[0]] and adv.tolist() == [[False]]
    assert torch.equal(new_last, last)
    # at epoch 10 (th = 1.04475) the same pair with last = 1.05: ratio 1.05 > 1.04475 -> advance
    _, _, adv10 = dkc_step(
        _student(1), tops, torch.zeros(1, 1, dtype=torch.long), torch.tensor([[1.05]]), 10,
        first=False, k=3,
    )
    assert adv10.tolist() == [[True]]


def test_now_zero_advances_even_if_last_zero():
    # point 1 = SAME -> now = 0 -> ratio = +inf -> advance, for last = 0 and last = 0.3.
    # New v = 1 -> new last = D(point 2) = D(DISJ) = 1.
    tops = _tops([[[DISJ, SAME, DISJ], [DISJ, SAME, DISJ]]])
    last = torch.tensor([[0.0, 0.3]])
    new_v, new_last, adv = dkc_step(
        _student(2), tops, torch.zeros(1, 2, dtype=torch.long), last, 30, first=False, k=3
    )
    assert new_v.tolist() == [[1, 1]] and adv.all()
    assert new_last.tolist() == [[1.0, 1.0]]


def test_last_zero_now_positive_advances():
    # last = 0, now = D(MISS2) > 0 -> ratio 0 < 1 -> advance.
    tops = _tops([[[DISJ, MISS2, SAME]]])
    new_v, new_last, _ = dkc_step(
        _student(1), tops, torch.zeros(1, 1, dtype=torch.long), torch.tensor([[0.0]]), 30,
        first=False, k=3,
    )
    assert new_v.tolist() == [[1]] and new_last.tolist() == [[0.0]]  # D(SAME) = 0


def test_pairs_at_final_point_untouched():
    # T = 3, v = 2 = T-1.  Point 2 = SAME would give now = 0 (ratio inf), yet nothing changes.
    tops = _tops([[[DISJ, DISJ, SAME]]])
    v = torch.tensor([[2]])
    last = torch.tensor([[0.7]])
    for first in (True, False):
        new_v, new_last, adv = dkc_step(_student(1), tops, v, last, 40, first=first, k=3)
        assert new_v.tolist() == [[2]] and not adv.any()
        assert new_last.tolist() == [[pytest.approx(0.7)]]


def test_advance_to_final_point_stores_distance_to_final():
    # T = 3, v = 1: next point is 2 (= T-1) = MISS1, now = 0.2848310; last = 5 -> ratio
    # 17.55 > th -> v = 2 and last = D(point min(3, 2)) = D(point 2) = 0.2848310.
    tops = _tops([[[DISJ, SAME, MISS1]]])
    new_v, new_last, adv = dkc_step(
        _student(1), tops, torch.tensor([[1]]), torch.tensor([[5.0]]), 10, first=False, k=3
    )
    assert new_v.tolist() == [[2]] and adv.tolist() == [[True]]
    assert new_last.item() == pytest.approx(D_MISS1, abs=1e-6)


def test_mixed_batch_in_one_call():
    # M = 2, U = 3, T = 3, epoch 20 (th = 1.0395263); one call, every pair decided at once.
    tops = _tops(
        [
            # x = 0
            [
                [DISJ, MISS2, MISS0],  # u0: v=0, last 0.5 / now 0.19765 = 2.53 -> advance, last = 0.51752
                [DISJ, DISJ, SAME],  # u1: v=0, last 1.0 / now 1 = 1 -> hold, last 1.0
                [DISJ, DISJ, SAME],  # u2: v=2 (final) -> untouched, last 0.25
            ],
            # x = 1
            [
                [DISJ, MISS0, MISS1],  # u0: v=0, last 0.1 / now 0.51752 = 0.19 -> advance, last = 0.28483
                [DISJ, MISS1, SAME],  # u1: v=1, next = 2 = SAME, now 0 -> advance, last = D(point 2) = 0
                [DISJ, MISS1, SAME],  # u2: v=0, last 0.29 / now 0.28483 = 1.018 -> hold, last 0.29
            ],
        ]
    )
    v = torch.tensor([[0, 0, 2], [0, 1, 0]])
    last = torch.tensor([[0.5, 1.0, 0.25], [0.1, 0.9, 0.29]])
    new_v, new_last, adv = dkc_step(_student(3), tops, v, last, 20, first=False, k=3)
    assert new_v.tolist() == [[1, 0, 2], [1, 2, 0]]
    assert adv.tolist() == [[True, False, False], [True, True, False]]
    expected = torch.tensor([[D_MISS0, 1.0, 0.25], [D_MISS1, 0.0, 0.29]])
    assert torch.allclose(new_last, expected, atol=1e-6)


def test_constant_distance_still_terminates():
    # Every point of every teacher equals MISS1 for every user, so D is the same
    # float at every call and last / now = 1 exactly.  Calls at epochs 10, 20, ...
    #   epoch 10: first call, stores last.
    #   epochs 20..90: th = 1.05 * 0.995^n >= 1.05 * 0.995^9 = 1.0037 > 1 and ratio 1 is
    #     neither > th nor < 1 -> hold.
    #   epoch 100: th = 1.05 * 0.995^10 = 0.99867 < 1 -> ratio 1 > th -> v 0 -> 1.
    #   epoch 110: th = 0.99367 -> v 1 -> 2;  epoch 120: th = 0.98870 -> v 2 -> 3 = T-1.
    # So with T = 4 everything is done exactly at epoch 120.
    m, t_points, u = 2, 4, 3
    tops = torch.tensor(MISS1).expand(m, t_points, u, 3).clone()
    student = _student(u)
    v = torch.zeros(m, u, dtype=torch.long)
    last = torch.full((m, u), float("nan"))
    history = {}
    epoch = 10
    first = True
    while not dkc_done(v, t_points) and epoch <= 200:
        v, last, _ = dkc_step(student, tops, v, last, epoch, first=first, k=3)
        first = False
        history[epoch] = v.clone()
        epoch += 10
    assert dkc_done(v, t_points)
    assert max(history) == 120
    assert all((history[e] == 0).all() for e in range(10, 100, 10))
    assert (history[100] == 1).all()
    assert (history[110] == 2).all()
    assert (history[120] == 3).all()
    assert point_shares(v, t_points).tolist() == [[0.0, 0.0, 0.0, 1.0]] * m


def test_edge_item_ids_and_items_beyond_the_teachers():
    # items 63, 64 and 127 (word edges of the earlier bit-set code) and 500, beyond every
    # teacher item: a student item no teacher list holds is a miss
    s = torch.tensor([[63, 127, 1, 64, 500]])
    t = torch.tensor([[64, 0, 127, 63, 2]])
    w = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(5)]
    expected = (w[2] + w[4]) / sum(w)  # misses: 1 (position 2) and 500 (position 4)
    assert ranking_discrepancy(s, t, k=5).item() == pytest.approx(expected, rel=1e-6)
    # every one of the 64 bits of a word, and the next word
    full = torch.arange(128).unsqueeze(0)
    assert ranking_discrepancy(full, full.flip(1), k=128).item() == 0.0
    assert ranking_discrepancy(full[:, :64], full[:, 64:], k=64).item() == 1.0


def test_repeated_teacher_items_count_once():
    # a repeated teacher item counts once (summing its weight twice would over-count the hit)
    w = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(3)]
    d = ranking_discrepancy(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 5]]), k=3)
    assert d.item() == pytest.approx((w[1] + w[2]) / sum(w), rel=1e-6)
    many = torch.tensor([[63] * 50 + [0] * 10])  # bit 63 (the sign bit) fifty times
    student = torch.tensor([[63, 0] + list(range(100, 158))])
    w60 = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(60)]
    assert ranking_discrepancy(student, many, k=60).item() == pytest.approx(
        sum(w60[2:]) / sum(w60), rel=1e-6)


def test_gather_points_checks_and_empty_users():
    tops = torch.arange(2 * 3 * 4 * 5).view(2, 3, 4, 5)
    v = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    assert gather_points(tops, v, torch.tensor([], dtype=torch.long)).shape == (2, 0, 5)
    torch.testing.assert_close(gather_points(tops, v, torch.tensor([3, 1])),
                               torch.stack([tops[0, [0, 1], [3, 1]], tops[1, [0, 2], [3, 1]]]))
    with pytest.raises(ValueError, match="users"):
        gather_points(tops, v, torch.tensor([-1]))
    with pytest.raises(ValueError, match="point"):
        gather_points(tops, v + 1)


def test_repeated_student_items_weigh_every_position():
    # D = sum_t [s_t not in S] w_t / W: item 1 at positions 0 and 1 is in S, so both hit
    w = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(4)]
    d = ranking_discrepancy(torch.tensor([[1, 1, 2, 1]]), torch.tensor([[1, 5, 6, 7]]), k=4)
    assert d.item() == pytest.approx(w[2] / sum(w), rel=1e-6)
    assert ranking_discrepancy(torch.tensor([[3, 3, 3]]), torch.tensor([[3, 0, 1]]), k=3).item() == 0.0


def test_teacher_items_beyond_every_student_item_are_misses():
    s = torch.tensor([[0, 1, 2], [2, 1, 0]])
    t = torch.tensor([[10**6, 1, 7], [0, 10**6 + 1, 99]])
    w = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(3)]
    d = ranking_discrepancy(s, t, k=3)
    assert d.tolist() == pytest.approx([(w[0] + w[2]) / sum(w), (w[0] + w[1]) / sum(w)], rel=1e-6)


def test_one_user_per_chunk_resets_the_position_map(monkeypatch):
    # every chunk reuses the map of the one before: entries a chunk set must not leak into the next
    gen = torch.Generator().manual_seed(3)
    u, m, n_points, n = 23, 3, 4, 60
    tops = torch.stack([torch.randperm(90, generator=gen)[:n] for _ in range(m * n_points * u)]).view(m, n_points, u, n)
    student = torch.stack([torch.randperm(90, generator=gen)[:50] for _ in range(u)])
    tops[:, :, 5, :50] = student[5]  # one user identical to every point
    v = torch.randint(0, n_points - 1, (m, u), generator=gen)
    last = torch.rand(m, u, generator=gen)
    whole = dkc_step(student, tops, v, last, 50, first=False)
    d_whole = ranking_discrepancy(student, tops[0, 0])
    monkeypatch.setattr(cur, "CHUNK_LIST_ELEMS", 1)
    chunked = dkc_step(student, tops, v, last, 50, first=False)
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked))
    d_chunked = ranking_discrepancy(student, tops[0, 0])
    assert torch.equal(d_whole, d_chunked) and d_chunked[5].item() == 0.0
    # against the per-pair rule
    expected = torch.stack([ranking_discrepancy(student, tops[x, torch.clamp(v[x] + 1, max=3), torch.arange(u)])
                            for x in range(m)])
    ratio = last / expected
    th = dkc_threshold(50)
    advanced = (v < 3) & ((ratio > th) | (ratio < 1) | (expected == 0))
    assert torch.equal(chunked[2], advanced)


def test_small_weights_keep_float64_precision():
    # only the last of 200 positions misses: D = w_199 / W, about 5.4e-11; integer weights too
    # coarse for it (units of 2**-40) were 4e-4 off, and float32 rounding of the exact value is wanted
    w = [(2.0 ** math.exp(-i / 10.0) - 1.0) / math.log2(i + 2.0) for i in range(200)]
    s = torch.arange(200).unsqueeze(0)
    t = s.clone()
    t[0, -1] = 10**6
    expected = torch.tensor(w[199] / math.fsum(w), dtype=torch.float64).float()
    assert ranking_discrepancy(s, t, k=200).item() == expected.item()


def test_int32_lists_are_accepted():
    gen = torch.Generator().manual_seed(4)
    s = torch.stack([torch.randperm(300, generator=gen)[:50] for _ in range(5)])
    t = torch.stack([torch.randperm(300, generator=gen)[:50] for _ in range(5)])
    assert torch.equal(ranking_discrepancy(s.int(), t.int()), ranking_discrepancy(s, t))
    tops = torch.stack([torch.randperm(300, generator=gen)[:60] for _ in range(2 * 3 * 5)]).view(2, 3, 5, 60)
    v, last = torch.zeros(2, 5, dtype=torch.long), torch.full((2, 5), 0.9)
    wide = dkc_step(s, tops, v, last, 30, first=False)
    narrow = dkc_step(s.int(), tops.int(), v, last, 30, first=False)
    assert all(torch.equal(a, b) for a, b in zip(wide, narrow))
