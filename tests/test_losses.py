"""Tests for recbole_hetcomp.distill.losses; expected values are worked out by hand below."""

import math

import pytest
import torch

from recbole_hetcomp.distill.losses import factorised_loss, overall_loss, rank_loss

E = math.exp
L = math.log


def _t(rows, dtype=torch.long):
    return torch.tensor(rows, dtype=dtype)


def _mask(n_items, train_rows):
    m = torch.zeros(len(train_rows), n_items, dtype=torch.bool)
    for u, items in enumerate(train_rows):
        m[u, list(items)] = True
    return m


# ---------------------------------------------------------------------------
# Case A: all scores 0, so every exp is 1 and each log is log(count).
#   I = 14, training items {0, 1, 2}; Pobs = [0, 1] (item 2 is a training
#   item NOT in Pobs); T = [3, ..., 12] (K = 10, K//2 = 5, K//10 = 1);
#   Unobs = {3, ..., 13} (11 items); item 13 is unobserved and not in T.
# ---------------------------------------------------------------------------
def _case_a(scores=None):
    if scores is None:
        scores = torch.zeros(1, 14)
    observed = _t([[0, 1]])
    top = _t([list(range(3, 13))])
    return scores, observed, top, _mask(14, [{0, 1, 2}])


def test_overall_loss_zero_scores_by_hand():
    # R = Unobs \ T = {13} -> Z(R) = 1.  Each of the 2 + 10 = 12 items gives
    # -(0 - log(e^0 + 1)) = log 2.
    expected = 12 * L(2)
    got = overall_loss(*_case_a())
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_rank_loss_zero_scores_by_hand():
    # Tail for Pobs and T[:5]: Unobs \ {3..7} = {8..13} -> Z = 6.
    #   listmle([0, 1], Z=6)       = log(2 + 6) + log(1 + 6)
    #   listmle([3..7], Z=6)       = log(5+6) + log(4+6) + log(3+6) + log(2+6) + log(1+6)
    # Tail for T[:1] = [3]: Unobs \ {3} = {4..13} -> Z = 10.
    #   listmle([3], Z=10)         = log(1 + 10)
    expected = (L(8) + L(7)) + (
        (L(11) + L(10) + L(9) + L(8) + L(7)) + L(11)
    ) / 2
    got = rank_loss(*_case_a())
    assert got.item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------
# Case B: non-zero scores.
#   I = 6, a = [0.5, -1.0, 2.0, 0.0, 1.0, -0.5]; training items {0, 1};
#   Pobs = [1, 0] (ensemble order: item 1 first); T = [2, 4] (K = 2).
# ---------------------------------------------------------------------------
A_B = [0.5, -1.0, 2.0, 0.0, 1.0, -0.5]


def _case_b():
    return (
        torch.tensor([A_B]),
        _t([[1, 0]]),
        _t([[2, 4]]),
        _mask(6, [{0, 1}]),
    )


def test_overall_loss_nonzero_scores_by_hand():
    # R = Unobs \ T = {3, 5}: Z(R) = e^0 + e^-0.5 = 1.6065307
    z = E(0.0) + E(-0.5)
    expected = -(
        (-1.0 - L(E(-1.0) + z))  # item 1
        + (0.5 - L(E(0.5) + z))  # item 0
        + (2.0 - L(E(2.0) + z))  # item 2
        + (1.0 - L(E(1.0) + z))  # item 4
    )
    got = overall_loss(*_case_b())
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_rank_loss_nonzero_scores_by_hand():
    # K = 2: T[:1] = [2], T[:0] = [] (contributes 0).
    # Tail Unobs \ {2} = {3, 4, 5}: Zh = e^0 + e^1 + e^-0.5
    zh = E(0.0) + E(1.0) + E(-0.5)
    # listmle([1, 0]): position 0 denominator holds both list items, position 1 only item 0.
    pobs = -((-1.0 - L(E(-1.0) + E(0.5) + zh)) + (0.5 - L(E(0.5) + zh)))
    half = -(2.0 - L(E(2.0) + zh))
    expected = pobs + (half + 0.0) / 2
    got = rank_loss(*_case_b())
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_rank_loss_order_of_pobs_matters():
    scores, observed, top, mask = _case_b()
    swapped = rank_loss(scores, observed.flip(1), top, mask)
    # listmle([0, 1]) with the same tail zh:
    zh = E(0.0) + E(1.0) + E(-0.5)
    pobs = -((0.5 - L(E(0.5) + E(-1.0) + zh)) + (-1.0 - L(E(-1.0) + zh)))
    expected = pobs + (-(2.0 - L(E(2.0) + zh))) / 2
    assert swapped.item() == pytest.approx(expected, rel=1e-6)
    # and it differs from the original order
    assert abs(swapped.item() - rank_loss(*_case_b()).item()) > 1e-3


# ---------------------------------------------------------------------------
# Log clamp at 1e-5.
# ---------------------------------------------------------------------------
def test_log_clamp_changes_the_result():
    # I = 3, all scores -40; training item {0}; Pobs = [0]; T = [1, 2] (K = 2).
    # exp(-40) = 4.25e-18 and 2 * exp(-40) are both below 1e-5, so every log
    # is log(1e-5) = -11.5129.  Without the clamp every term would be 0.
    scores = torch.full((1, 3), -40.0)
    observed, top, mask = _t([[0]]), _t([[1, 2]]), _mask(3, [{0}])
    per_term = 40.0 + L(1e-5)  # -(-40 - log(1e-5)) = 28.4871
    # overall: R = Unobs \ T = {} -> Z = 0; items 0, 1, 2 give
    # -(-40 - log(clamp(e^-40 + 0))) each.
    assert overall_loss(scores, observed, top, mask).item() == pytest.approx(
        3 * per_term, rel=1e-6
    )
    # rank: T[:1] = [1], tail {2} (Z = e^-40); T[:0] empty.
    #   listmle([0]) = -(-40 - log(clamp(e^-40 + e^-40))) = per_term
    #   listmle([1]) = per_term
    assert rank_loss(scores, observed, top, mask).item() == pytest.approx(
        per_term + per_term / 2, rel=1e-6
    )


# ---------------------------------------------------------------------------
# Masking of training items.
# ---------------------------------------------------------------------------
def test_training_item_outside_pobs_appears_nowhere():
    base = _case_a()
    for new_score in (-40.0, 5.0, 40.0):
        scores = torch.zeros(1, 14)
        scores[0, 2] = new_score  # item 2: a training item not in Pobs
        changed = _case_a(scores)
        assert overall_loss(*changed).item() == pytest.approx(overall_loss(*base).item(), rel=1e-6)
        assert rank_loss(*changed).item() == pytest.approx(rank_loss(*base).item(), rel=1e-6)


def test_pobs_items_are_not_in_the_unobserved_denominators():
    # Raising the score of Pobs item 1 must not change the T terms.
    # Case A with a_1 = 3: overall terms of T still log 2 each (10 of them);
    # Pobs item 0: -(0 - log(1 + 1)) = log 2; Pobs item 1: -(3 - log(e^3 + 1)).
    scores = torch.zeros(1, 14)
    scores[0, 1] = 3.0
    expected = 11 * L(2) - (3.0 - L(E(3.0) + 1.0))
    assert overall_loss(*_case_a(scores)).item() == pytest.approx(expected, rel=1e-6)
    # rank: listmle([0, 1], Z=6) = -(0 - log(1 + e^3 + 6)) - (3 - log(e^3 + 6));
    # the T terms are unchanged.
    expected_rank = (L(1 + E(3.0) + 6) - (3.0 - L(E(3.0) + 6))) + (
        (L(11) + L(10) + L(9) + L(8) + L(7)) + L(11)
    ) / 2
    assert rank_loss(*_case_a(scores)).item() == pytest.approx(expected_rank, rel=1e-6)


# ---------------------------------------------------------------------------
# K not divisible by 10.
# ---------------------------------------------------------------------------
def test_rank_loss_k7_floors():
    # I = 10, zeros; training {0}; Pobs = [0]; T = [1..7] (K = 7: K//2 = 3, K//10 = 0).
    # Unobs = {1..9} (9 items); tail Unobs \ {1, 2, 3} has 6 items -> Z = 6.
    #   listmle([0])        = log(1 + 6)
    #   listmle([1, 2, 3])  = log(3+6) + log(2+6) + log(1+6)
    #   T[:0] term          = 0
    scores = torch.zeros(1, 10)
    args = (scores, _t([[0]]), _t([list(range(1, 8))]), _mask(10, [{0}]))
    expected = L(7) + (L(9) + L(8) + L(7)) / 2
    assert rank_loss(*args).item() == pytest.approx(expected, rel=1e-6)
    # overall: R = {8, 9} -> Z = 2; 1 + 7 items, each -(0 - log(1 + 2)) = log 3
    assert overall_loss(*args).item() == pytest.approx(8 * L(3), rel=1e-6)


# ---------------------------------------------------------------------------
# Padding and batch sums.
# ---------------------------------------------------------------------------
def test_padding_is_ignored():
    scores, observed, top, mask = _case_b()
    pad_obs = _t([[1, 0, -1, -1]])
    # K = 3 vs K = 2: K//2 = 1 and K//10 = 0 in both, so the padded top is equivalent.
    pad_top = _t([[2, 4, -1]])
    for fn in (overall_loss, rank_loss):
        ref = fn(scores, observed, top, mask).item()
        assert fn(scores, pad_obs, top, mask).item() == pytest.approx(ref, rel=1e-6)
        assert fn(scores, pad_obs, pad_top, mask).item() == pytest.approx(ref, rel=1e-6)


def test_padding_does_not_touch_item_zero():
    # Item 0 is unobserved here; padding (-1) must not remove it from a tail
    # nor add it to a list.
    # I = 4, zeros; training {3}; Pobs = [3, -1]; T = [1, -1] (K = 2 -> T[:1] = [1]).
    # overall: R = {0, 2} -> Z = 2; items 3 and 1 give log(1 + 2) each.
    # rank: tail Unobs \ {1} = {0, 2} -> Z = 2:
    #   listmle([3]) = log(1 + 2);  listmle([1]) = log(1 + 2); T[:0] = 0.
    args = (torch.zeros(1, 4), _t([[3, -1]]), _t([[1, -1]]), _mask(4, [{3}]))
    assert overall_loss(*args).item() == pytest.approx(2 * L(3), rel=1e-6)
    assert rank_loss(*args).item() == pytest.approx(L(3) + L(3) / 2, rel=1e-6)


def test_batch_is_sum_of_users():
    # User 0 = case B.  User 1: I = 6, zeros except a_5 = 1; training {0};
    # Pobs = [0, -1] (only one training item: padded); T = [1, 2].
    s1 = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    scores = torch.tensor([A_B, s1])
    observed = _t([[1, 0], [0, -1]])
    top = _t([[2, 4], [1, 2]])
    mask = _mask(6, [{0, 1}, {0}])
    for fn in (overall_loss, rank_loss):
        both = fn(scores, observed, top, mask)
        u0 = fn(scores[:1], observed[:1], top[:1], mask[:1])
        u1 = fn(scores[1:], observed[1:], top[1:], mask[1:])
        assert both.item() == pytest.approx(u0.item() + u1.item(), rel=1e-6)
    # user 1 by hand, overall: R = {3, 4, 5} -> Z = 1 + 1 + e; items 0, 1, 2
    # each give -(0 - log(1 + 2 + e)).
    u1_overall = 3 * L(3 + E(1.0))
    assert overall_loss(scores[1:], observed[1:], top[1:], mask[1:]).item() == pytest.approx(
        u1_overall, rel=1e-6
    )
    # user 1 by hand, rank: tail Unobs \ {1} = {2, 3, 4, 5} -> Z = 3 + e;
    #   listmle([0]) = log(1 + 3 + e); listmle([1]) = log(1 + 3 + e); T[:0] = 0.
    u1_rank = L(4 + E(1.0)) * 1.5
    assert rank_loss(scores[1:], observed[1:], top[1:], mask[1:]).item() == pytest.approx(
        u1_rank, rel=1e-6
    )


# ---------------------------------------------------------------------------
# Types, gradients, stability, mask dtype.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_returns_0dim_tensor(fn):
    out = fn(*_case_b())
    assert isinstance(out, torch.Tensor)
    assert out.dim() == 0
    assert out.dtype == torch.float32


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_gradients_flow(fn):
    scores, observed, top, mask = _case_b()
    scores = scores.clone().requires_grad_(True)
    fn(scores, observed, top, mask).backward()
    g = scores.grad
    assert g is not None and torch.isfinite(g).all()
    # T[0] = item 2 is pushed up (negative gradient of the loss w.r.t. its score)
    assert g[0, 2] < 0
    # item 3 lies only in tails, so it is pushed down
    assert g[0, 3] > 0


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_float32_stable_on_100k_items(fn):
    gen = torch.Generator().manual_seed(0)
    b, n_items, p, k = 2, 100_000, 50, 100
    scores = (torch.rand(b, n_items, generator=gen) * 80.0 - 40.0).requires_grad_(True)
    perm = torch.stack([torch.randperm(n_items, generator=gen) for _ in range(b)])
    observed = perm[:, :p].clone()
    observed[1, 30:] = -1  # second user has only 30 training items
    top = perm[:, p : p + k].clone()
    mask = torch.zeros(b, n_items, dtype=torch.bool)
    mask.scatter_(1, perm[:, :p], True)
    mask[1] = False
    mask[1, perm[1, :30]] = True
    loss = fn(scores, observed, top, mask)
    loss.backward()
    # float32 over 100k items stays with the float64 computation, value and gradient (not merely finite)
    wide = scores.detach().double().requires_grad_(True)
    exact = fn(wide, observed, top, mask)
    exact.backward()
    assert loss.item() == pytest.approx(exact.item(), rel=1e-5)
    torch.testing.assert_close(scores.grad.double(), wide.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_bool_and_float_masks_agree(fn):
    scores, observed, top, mask = _case_a()
    scores = torch.linspace(-3, 3, 14).unsqueeze(0)
    a = fn(scores, observed, top, mask)
    b = fn(scores, observed, top, mask.float())
    c = fn(scores, observed, top, mask.long())
    assert a.item() == b.item() == c.item()


def test_training_item_outside_pobs_gets_zero_gradient():
    scores, observed, top, mask = _case_a()
    scores = torch.linspace(-3, 3, 14).unsqueeze(0).requires_grad_(True)
    (overall_loss(scores, observed, top, mask) + rank_loss(scores, observed, top, mask)).backward()
    assert scores.grad[0, 2] == 0.0  # training item 2 is not in Pobs


# ---------------------------------------------------------------------------
# Against a per-user reference written straight from the spec's formulas (float64, Python
# sets and loops), on random batches with every awkward input: padding in Pobs and T, T
# items repeated or observed, K below 10 and odd. Values and gradients must agree.
# ---------------------------------------------------------------------------
def _reference(scores, observed, top, train_mask, kind):
    def z(a, tail):
        return sum(torch.exp(a[j]) for j in tail) if tail else a.new_zeros(())

    def listmle(a, items, tail):
        zt = z(a, tail)
        return -sum(a[items[k]] - torch.log(torch.clamp(sum(torch.exp(a[i]) for i in items[k:]) + zt, min=1e-5))
                    for k in range(len(items)))

    total = scores.new_zeros(())
    k = top.shape[1]
    for u in range(scores.shape[0]):
        a = scores[u]
        unobs = {j for j in range(scores.shape[1]) if not train_mask[u, j]}
        pobs = [int(j) for j in observed[u] if j >= 0]
        t_row = [int(j) for j in top[u]]
        t = [j for j in t_row if j >= 0]
        if kind == "overall":
            tail = sorted(unobs - set(t))
            zt = z(a, tail)
            total = total - sum(a[i] - torch.log(torch.clamp(torch.exp(a[i]) + zt, min=1e-5)) for i in pobs + t)
        else:
            half = [j for j in t_row[: k // 2] if j >= 0]
            tenth = [j for j in t_row[: k // 10] if j >= 0]
            total = total + listmle(a, pobs, sorted(unobs - set(half)))
            total = total + (listmle(a, half, sorted(unobs - set(half)))
                             + listmle(a, tenth, sorted(unobs - set(tenth)))) / 2
    return total


def _random_case(seed, b=3, n_items=40, p=4, k=12):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n_items, generator=gen, dtype=torch.float64) * 3
    observed = torch.randint(0, n_items, (b, p), generator=gen)
    top = torch.randint(0, n_items, (b, k), generator=gen)  # repeats and observed items on purpose
    observed[0, -1] = -1  # padding at the end of a row
    top[1, -3:] = -1
    mask = torch.rand(b, n_items, generator=gen) < 0.3
    mask.scatter_(1, observed.clamp(min=0), True)
    return scores, observed, top, mask


@pytest.mark.parametrize("fn,kind", [(overall_loss, "overall"), (rank_loss, "rank")])
@pytest.mark.parametrize("seed,k", [(0, 12), (1, 20), (2, 7), (3, 9), (4, 1), (5, 30)])
def test_matches_per_user_reference_values_and_gradients(fn, kind, seed, k):
    scores, observed, top, mask = _random_case(seed, k=k)
    got_s = scores.clone().requires_grad_(True)
    got = fn(got_s, observed, top, mask)
    got.backward()
    ref_s = scores.clone().requires_grad_(True)
    ref = _reference(ref_s, observed, top, mask, kind)
    ref.backward()
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(got_s.grad, ref_s.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_loss_without_gradient_equals_loss_with(fn):
    scores, observed, top, mask = _random_case(7)
    with torch.no_grad():
        plain = fn(scores, observed, top, mask)
    tracked = fn(scores.clone().requires_grad_(True), observed, top, mask)
    assert plain.item() == tracked.item()
    assert not plain.requires_grad and tracked.requires_grad


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_gradient_scales_with_the_upstream_gradient(fn):
    scores, observed, top, mask = _random_case(8)
    s1 = scores.clone().requires_grad_(True)
    fn(s1, observed, top, mask).backward()
    s2 = scores.clone().requires_grad_(True)
    (0.01 * fn(s2, observed, top, mask)).backward()
    torch.testing.assert_close(s2.grad, 0.01 * s1.grad)


def test_no_pobs_and_k1_is_a_constant_zero_with_zero_gradient():
    # P = 0 and K = 1: T[:K//2] and T[:K//10] are empty, so every rank-loss term is empty
    scores = torch.randn(2, 6, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    loss = rank_loss(scores, torch.empty(2, 0, dtype=torch.long), torch.tensor([[3], [4]]), mask)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros(2, 6))


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_no_grad_with_a_leaf_that_requires_grad(fn):
    scores, observed, top, mask = _random_case(9)
    leaf = scores.clone().requires_grad_(True)
    with torch.no_grad():
        out = fn(leaf, observed, top, mask)
    assert not out.requires_grad
    assert out.item() == fn(scores, observed, top, mask).item()


def test_double_backward_is_refused_loudly():
    scores, observed, top, mask = _random_case(10)
    leaf = scores.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(overall_loss(leaf, observed, top, mask), leaf, create_graph=True)
    # beside a twice-differentiable term too, where a second derivative would otherwise miss this loss's part
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(overall_loss(leaf, observed, top, mask) + (leaf ** 3).sum(), leaf, create_graph=True)


# ---------------------------------------------------------------------------
# factorised_loss: the student's path (scores = U @ V.T, clamped inside, in a workspace)
# ---------------------------------------------------------------------------
def _factor_case(seed, b=3, n_items=40, d=4, p=4, k=12, scale=4.0, dtype=torch.float64):
    _, observed, top, mask = _random_case(seed, b, n_items, p, k)
    gen = torch.Generator().manual_seed(100 + seed)
    users = (torch.randn(b, d, generator=gen, dtype=dtype) * scale).requires_grad_(True)
    table = (torch.randn(n_items, d, generator=gen, dtype=dtype) * scale).requires_grad_(True)
    return users, table, observed, top, mask


@pytest.mark.parametrize("mode,fn", [("overall", overall_loss), ("rank", rank_loss)])
@pytest.mark.parametrize("clamp", [None, 40.0, 10.0])
@pytest.mark.parametrize("workspace_size", [None, 1, 2])  # in units of B * I (2: raw scores too)
def test_factorised_loss_is_the_loss_of_the_clamped_product(mode, fn, clamp, workspace_size):
    users, table, observed, top, mask = _factor_case(0 if clamp != 10.0 else 1)
    raw = users @ table.t()
    if clamp == 10.0:  # scores clamped on both sides, list items among them
        assert raw.max() > 10 and raw.min() < -10
    scores = raw if clamp is None else raw.clamp(-clamp, clamp)
    want = fn(scores, observed, top, mask)
    want_grads = torch.autograd.grad(want, [users, table])
    n = users.shape[0] * table.shape[0]
    workspace = None if workspace_size is None else torch.full((workspace_size * n + 5,), float("nan"), dtype=users.dtype)
    got = factorised_loss(mode, users, table, observed, top, mask, clamp=clamp, workspace=workspace)
    got_grads = torch.autograd.grad(got, [users, table])
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)
    with torch.no_grad():
        torch.testing.assert_close(factorised_loss(mode, users, table, observed, top, mask, clamp=clamp), want)


@pytest.mark.parametrize("mode", ["overall", "rank"])
@pytest.mark.parametrize("clamp", [None, 10.0])
def test_factorised_loss_from_training_entries_is_bit_identical_to_the_mask(mode, clamp):
    # what the student passes: the training items as entries (any order; column 0 implied)
    # instead of a [B, I] mask; the tail is zeroed at the same cells, so values and gradients are equal exactly
    from recbole_hetcomp.distill.losses import TrainEntries

    users, table, observed, top, mask = _factor_case(1)
    top[1, -3:] = -1  # padding
    top[2, 5] = top[2, 0]  # an item listed twice
    mask[:, 0] = True
    rows, cols = mask[:, 1:].nonzero(as_tuple=True)
    order = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(0))
    entries = TrainEntries(rows[order], cols[order] + 1, tuple(mask.shape))
    assert torch.equal(entries.observed(top), mask.gather(1, top.clamp(min=0)) | (top < 0))
    results = []
    for train in (mask, entries):
        loss = factorised_loss(mode, users, table, observed, top, train, clamp=clamp,
                               workspace=torch.empty(2 * mask.numel(), dtype=users.dtype))
        results.append((loss, *torch.autograd.grad(loss, [users, table])))
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)


def test_factorised_loss_scores_at_the_bound_keep_their_gradient():
    # d = 1, user factor 1: the scores are the item factors. As with torch.clamp, a score
    # exactly at +-c keeps its gradient; one beyond it gets none (in the tail and in a list).
    users = torch.ones(1, 1, dtype=torch.float64, requires_grad=True)
    table = torch.tensor([[0.0], [5.0], [-5.0], [6.0], [-6.0], [1.0], [2.0]], dtype=torch.float64,
                         requires_grad=True)
    observed, top = _t([[0]]), _t([[3, 1]])
    mask = _mask(7, [{0}])
    got = factorised_loss("overall", users, table, observed, top, mask, clamp=5.0)
    (g_table,) = torch.autograd.grad(got, [table])
    assert g_table[1, 0] != 0 and g_table[2, 0] != 0  # exactly at +-5
    assert g_table[3, 0] == 0 and g_table[4, 0] == 0  # beyond: clamped (item 3 is in T)
    want = overall_loss((users @ table.t()).clamp(-5, 5), observed, top, mask)
    torch.testing.assert_close(got, want)


def test_factorised_loss_refuses_a_reused_workspace_before_backward():
    users, table, observed, top, mask = _factor_case(2)
    workspace = torch.empty(users.shape[0] * table.shape[0], dtype=users.dtype)
    first = factorised_loss("rank", users, table, observed, top, mask, clamp=40.0, workspace=workspace)
    second = factorised_loss("rank", users, table, observed, top, mask, clamp=40.0, workspace=workspace)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
    second.backward(retain_graph=True)  # the latest graph is intact
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        second.backward()  # its backward overwrote the saved tail


def test_factorised_loss_rejects_bad_arguments():
    users, table, observed, top, mask = _factor_case(3)
    with pytest.raises(ValueError, match="mode must be 'overall' or 'rank'"):
        factorised_loss("listwise", users, table, observed, top, mask)
    with pytest.raises(ValueError, match="workspace holds 10 floats, needs 120"):
        factorised_loss("overall", users, table, observed, top, mask, workspace=torch.empty(10, dtype=users.dtype))
    with pytest.raises(ValueError, match="must share d"):
        factorised_loss("overall", users, table[:, :2], observed, top, mask)
    with pytest.raises(ValueError, match=r"train_mask must be \[B, I\]"):
        factorised_loss("overall", users, table, observed, top, mask[:, :5])


@pytest.mark.parametrize("fn", [overall_loss, rank_loss])
def test_spec_losses_can_run_backward_twice_with_retain_graph(fn):
    scores, observed, top, mask = _random_case(7)
    scores.requires_grad_(True)
    loss = fn(scores, observed, top, mask)
    (first,) = torch.autograd.grad(loss, [scores], retain_graph=True)
    (second,) = torch.autograd.grad(loss, [scores])
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["overall", "rank"])
def test_factorised_loss_of_an_empty_batch_is_zero(mode):
    users = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    observed, top, mask = _t([[]] * 0).view(0, 2), _t([[]] * 0).view(0, 5), torch.zeros(0, 9, dtype=torch.bool)
    loss = factorised_loss(mode, users, table, observed, top, mask, clamp=40.0)
    assert loss.item() == 0
    loss.backward()
    assert torch.count_nonzero(table.grad) == 0


def test_factorised_loss_gradient_for_one_factor_only():
    users, table, observed, top, mask = _factor_case(5, scale=8.0)
    frozen = users.detach()
    want = rank_loss((frozen @ table.t()).clamp(-40, 40), observed, top, mask)
    (want_g,) = torch.autograd.grad(want, [table])
    (got_g,) = torch.autograd.grad(factorised_loss("rank", frozen, table, observed, top, mask, clamp=40.0), [table])
    torch.testing.assert_close(got_g, want_g)


def test_clamp_scores_equals_torch_clamp_in_value_and_gradient_bit_for_bit():
    from recbole_hetcomp.distill.losses import clamp_scores
    g = torch.Generator().manual_seed(0)
    raw = torch.empty(4, 50).uniform_(-60, 60, generator=g)
    raw[0, :3] = torch.tensor([40.0, -40.0, 0.0])  # exactly at a bound: the gradient passes, as torch.clamp's
    raw[1, :2] = torch.tensor([torch.nextafter(torch.tensor(40.0), torch.tensor(99.0)).item(), -40.000004])
    upstream = torch.empty(4, 50).uniform_(-1, 1, generator=g)
    x, y = raw.clone().requires_grad_(True), raw.clone().requires_grad_(True)
    got, want = clamp_scores(x, 40), y.clamp(-40, 40)
    assert torch.equal(got, want)
    got.backward(upstream)
    want.backward(upstream)
    assert torch.equal(x.grad, y.grad)
    assert x.grad[0, 0] == upstream[0, 0] and x.grad[0, 1] == upstream[0, 1] and x.grad[1, 0] == 0 and x.grad[1, 1] == 0
    with torch.no_grad():
        assert torch.equal(clamp_scores(x, 40), want)
