"""The fitted fusion (distill/fit.py): scoring from the lists alone, and the two searches."""

import math
import re

import pytest
import torch

from recbole_hetcomp.distill.ensemble import ensemble_scores
from recbole_hetcomp.distill.fit import (
    DEFAULT_GRID,
    Fusion,
    best_single_teacher,
    check_grid,
    draw_bags,
    fit_fusion,
    halves,
    parse_metric,
    prepare,
    prepare_sample,
    sample_users,
    score_fusion,
    single_teacher_scores,
)


def _long(rows):
    return torch.tensor(rows, dtype=torch.long)


def _csr(per_user):
    indptr = [0]
    for items in per_user:
        indptr.append(indptr[-1] + len(items))
    return _long(indptr), _long([i for items in per_user for i in items])


# ---------------------------------------------------------------------------- prepare


def test_prepare_by_hand():
    # two teachers, two users; user 1 has no validation item and is dropped
    lists = _long([[[5, 3, 7], [1, 2, 3]],
                   [[3, 9, -1], [4, 5, 6]]])
    indptr, items = _csr([[9, 7, 11], []])
    p = prepare(lists, indptr, items)
    assert p.n_users == 1 and p.n == 3 and p.n_pos.tolist() == [3]
    # distinct items of user 0's lists, sorted: 3, 5, 7, 9; then padding (user 1 has 6 distinct items)
    assert p.ranks[0].tolist() == [[1, 0], [0, 3], [2, 3], [3, 1], [3, 3], [3, 3]]
    assert p.hits[0].tolist() == [False, False, True, True, False, False]  # 11 is in no list: counted in n_pos


def test_prepare_rejects_mismatched_users():
    with pytest.raises(ValueError, match="validation items are given for 1 users, the lists for 2"):
        prepare(torch.zeros(1, 2, 3, dtype=torch.long), _long([0, 1]), _long([4]))


def test_prepare_sample_prepares_only_the_sampled_users():
    """The sampled problem holds the rows of prepare(...).subset(sample): the same users, ranks and hits, padded only
    to its own widest user; users without validation items are neither counted nor drawn."""
    g = torch.Generator().manual_seed(7)
    m, u, n, n_items = 3, 50, 8, 40
    lists = torch.stack([torch.stack([torch.randperm(n_items, generator=g)[:n] for _ in range(u)]) for _ in range(m)])
    lists[1, 4, 5:] = -1  # padding in a list
    valid = [[] if x % 7 == 3 else torch.randperm(n_items, generator=g)[: 1 + x % 4].tolist() for x in range(u)]
    indptr, items = _csr(valid)
    full = prepare(lists, indptr, items)
    kept = sum(1 for v in valid if v)
    for most, seed in ((10, 0), (10, 1), (kept - 1, 3)):
        part, total = prepare_sample(lists, indptr, items, most, seed)
        want = full.subset(sample_users(kept, most, seed))
        w = part.ranks.shape[1]
        assert total == kept and part.n_users == most and part.n == n
        assert torch.equal(part.ranks, want.ranks[:, :w]) and bool((want.ranks[:, w:] == n).all())
        assert torch.equal(part.hits, want.hits[:, :w]) and not bool(want.hits[:, w:].any())
        assert torch.equal(part.n_pos, want.n_pos)
    same, total = prepare_sample(lists, indptr, items, kept, 0)  # no fewer users than asked: all of them
    assert total == kept and torch.equal(same.ranks, full.ranks) and torch.equal(same.hits, full.hits)


# ---------------------------------------------------------------------------- metrics


def _one_user(lists, valid):
    indptr, items = _csr([valid])
    return prepare(_long(lists), indptr, items)


def test_recall_and_ndcg_by_hand():
    # one teacher ranks 4, 2, 8, 6; validation items {2, 6, 10}
    p = _one_user([[[4, 2, 8, 6]]], [2, 6, 10])
    f = Fusion(["A"], "exp", 10.0, [1.0])
    assert score_fusion(p, f, "recall@2") == pytest.approx(1 / 3)
    assert score_fusion(p, f, "recall@4") == pytest.approx(2 / 3)
    assert score_fusion(p, f, "precision@4") == pytest.approx(2 / 4)
    assert score_fusion(p, f, "hit@1") == 0.0 and score_fusion(p, f, "hit@2") == 1.0
    assert score_fusion(p, f, "mrr@4") == pytest.approx(1 / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert score_fusion(p, f, "ndcg@4") == pytest.approx(dcg / idcg)
    idcg2 = 1 + 1 / math.log2(3)  # RecBole's ideal DCG stops at min(|valid|, K)
    assert score_fusion(p, f, "ndcg@2") == pytest.approx((1 / math.log2(3)) / idcg2)


def test_single_teacher_scores_by_hand():
    # user 0, validation {2, 6}: A ranks 2 first (recall@2 1/2), B ranks 6 and 2 first (1), C lists neither (0);
    # user 1, validation {9}: A misses it, B has it third (beyond the cut-off), C has it first
    lists = [[[2, 4, 8], [1, 3, 5]],
             [[6, 2, 8], [3, 4, 9]],
             [[1, 3, 5], [9, 1, 2]]]
    indptr, items = _csr([[2, 6], [9]])
    p = prepare(_long(lists), indptr, items)
    assert single_teacher_scores(p, "recall@2") == [pytest.approx(1 / 4), pytest.approx(1 / 2), pytest.approx(1 / 2)]
    assert best_single_teacher(p, "recall@2") == (1, pytest.approx(1 / 2))  # B and C tie: the earlier teacher
    assert best_single_teacher(p, "recall@3")[0] == 1  # now B finds 9 too: 1.0 against C's 0.5
    # under every importance function a teacher alone scores as its own list
    for kind, param in (("rrf", 60.0), ("power", 2.0), ("exp", 1.0)):
        alone = [score_fusion(p, Fusion(list("ABC"), kind, param, [float(i == x) for i in range(3)]), "ndcg@3")
                 for x in range(3)]
        assert alone == single_teacher_scores(p, "ndcg@3"), kind


def test_the_fused_top_k_is_the_ensemble_formulas():
    """Scored on the union of the lists, a fusion ranks as ensemble_scores over the whole catalogue."""
    g = torch.Generator().manual_seed(3)
    m, u, n, n_items = 3, 40, 12, 60
    lists = torch.stack([torch.stack([torch.randperm(n_items, generator=g)[:n] for _ in range(u)])
                         for _ in range(m)])
    valid = [torch.randperm(n_items, generator=g)[:4].tolist() for _ in range(u)]
    indptr, items = _csr(valid)
    p = prepare(lists, indptr, items)
    weights = [2.0, 0.0, 0.5]
    for kind, param in (("exp", 5.0), ("rrf", 60.0), ("power", 0.5)):
        f = Fusion(list("ABC"), kind, param, weights)
        key = {"exp": "tau", "rrf": "rrf_k", "power": "power"}[kind]
        dense = ensemble_scores(lists, n_items, torch.tensor(weights), kind=kind, **{key: param})
        top = torch.topk(dense, 10, dim=1).indices
        want = sum(len(set(top[x].tolist()) & set(valid[x])) / 4 for x in range(u)) / u
        assert score_fusion(p, f, "recall@10") == pytest.approx(want)


# ---------------------------------------------------------------------------- the fit


@pytest.fixture(scope="module")
def oracle_and_noise():
    """Teacher 'oracle' lists the validation items first; 'noise' lists random items."""
    g = torch.Generator().manual_seed(0)
    u, n_items, n = 80, 200, 30
    valid = [torch.randperm(n_items, generator=g)[:5].tolist() for _ in range(u)]
    oracle, noise = [], []
    for items in valid:
        rest = [i for i in torch.randperm(n_items, generator=g).tolist() if i not in items]
        oracle.append(items + rest[: n - 5])
        noise.append(torch.randperm(n_items, generator=g)[:n].tolist())
    indptr, flat = _csr(valid)
    return prepare(_long([noise, oracle]), indptr, flat)


@pytest.mark.parametrize("method", ["greedy", "coordinate", "bagged"])
def test_the_oracle_gets_weight_and_the_noise_none(oracle_and_noise, method):
    f = fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10", method=method)
    assert f.weights[0] == 0 and f.weights[1] > 0
    assert f.score == 1.0


@pytest.mark.parametrize("method", ["greedy", "bagged"])
def test_greedy_is_never_below_the_best_single_teacher(method):
    g = torch.Generator().manual_seed(5)
    m, u, n, n_items = 4, 60, 20, 50
    for trial in range(3):
        lists = torch.stack([torch.stack([torch.randperm(n_items, generator=g)[:n] for _ in range(u)])
                             for _ in range(m)])
        indptr, items = _csr([torch.randperm(n_items, generator=g)[:3].tolist() for _ in range(u)])
        p = prepare(lists, indptr, items)
        f = fit_fusion(p, list("ABCD"), "ndcg@10", grid={"exp": [10.0], "rrf": [60.0]}, method=method, bags=3)
        singles = [score_fusion(p, Fusion(list("ABCD"), "exp", 10.0, [float(i == x) for i in range(m)]), "ndcg@10")
                   for x in range(m)]
        assert f.score >= max(singles)
        assert f.trace[0]["single_teacher_scores"] == singles


def _two_groups(seed=3):
    """Teachers A and B each list the validation items first for their own half of the users, random items for the
    other half; C lists random items for everyone."""
    g = torch.Generator().manual_seed(seed)
    u, n_items, n = 40, 60, 12
    valid = [torch.randperm(n_items, generator=g)[:3].tolist() for _ in range(u)]
    lists = []
    for good in (range(0, 20), range(20, 40), ()):
        rows = []
        for x, items in enumerate(valid):
            rest = [i for i in torch.randperm(n_items, generator=g).tolist() if i not in items]
            rows.append(items + rest[: n - 3] if x in good else torch.randperm(n_items, generator=g)[:n].tolist())
        lists.append(rows)
    indptr, flat = _csr(valid)
    return prepare(_long(lists), indptr, flat)


def test_bagged_weights_are_the_mean_of_the_greedy_fits_on_the_halves():
    """Under one importance, each bag (a seeded random half) gets the greedy fit; the weights are the mean of each
    bag's weights over their sum, and the fusion is scored on all the users."""
    p = _two_groups()
    f = fit_fusion(p, list("ABC"), "recall@10", method="bagged", bags=4, seed=7, fixed_importance=("rrf", 60.0))
    bags = draw_bags(p.n_users, 4, seed=7)
    assert len(bags) == 4 and all(len(b) == p.n_users // 2 for b in bags)
    want = torch.zeros(3, dtype=torch.float64)
    for rows in bags:
        w = torch.tensor(fit_fusion(p.subset(rows), list("ABC"), "recall@10", fixed_importance=("rrf", 60.0)).weights,
                         dtype=torch.float64)
        want += w / w.sum()
    assert f.weights == (want / 4).tolist()
    assert f.weights[2] == 0 and f.weights[0] > 0 and f.weights[1] > 0 and sum(f.weights) == pytest.approx(1)
    assert f.score == score_fusion(p, f, "recall@10") == 1.0  # A and B together serve every user
    assert [t["bag"] for t in f.trace[0]["path"]] == [0, 1, 2, 3]


def _mixed(seed=5):
    """Three teachers of unequal skill: each validation item is dropped at a random place of teacher x's list with
    probability 0.7, 0.5, 0.3 (the rest of the list random), so random halves of the users disagree on the weights."""
    g = torch.Generator().manual_seed(seed)
    u, n_items, n = 40, 60, 12
    valid = [torch.randperm(n_items, generator=g)[:3].tolist() for _ in range(u)]
    lists = []
    for chance in (0.7, 0.5, 0.3):
        rows = []
        for items in valid:
            row = [i for i in torch.randperm(n_items, generator=g).tolist() if i not in items][:n]
            for i in items:
                if torch.rand(1, generator=g).item() < chance:
                    row[int(torch.randint(n, (1,), generator=g))] = i
            rows.append(row)
        lists.append(rows)
    indptr, flat = _csr(valid)
    return prepare(_long(lists), indptr, flat)


def _greedy_on_bags(p, seed, bags=4, imp=("rrf", 60.0)):
    return [fit_fusion(p.subset(rows), list("ABC"), "recall@10", fixed_importance=imp).weights
            for rows in draw_bags(p.n_users, bags, seed=seed)]


def test_bagged_averages_bags_that_disagree():
    """Where the halves' greedy fits differ, the weights are the mean of every bag's normalised fit (not one bag's),
    the trace keeps each bag's, and the fusion is scored on all the users."""
    p = _mixed()
    per_bag = _greedy_on_bags(p, seed=7)
    assert len({tuple(w) for w in per_bag}) > 1  # the bags disagree, or this test could not tell them apart
    f = fit_fusion(p, list("ABC"), "recall@10", method="bagged", bags=4, seed=7, fixed_importance=("rrf", 60.0))
    assert [t["weights"] for t in f.trace[0]["path"]] == per_bag
    want = sum(torch.tensor(w, dtype=torch.float64) / sum(w) for w in per_bag) / 4
    assert f.weights == want.tolist()
    assert f.score == score_fusion(p, f, "recall@10")


def test_bagged_repeats_for_a_seed_and_draws_other_halves_for_another():
    p = _mixed()
    a = fit_fusion(p, list("ABC"), "ndcg@10", method="bagged", bags=4, seed=7)
    b = fit_fusion(p, list("ABC"), "ndcg@10", method="bagged", bags=4, seed=7)
    assert (a.kind, a.param, a.weights, a.score, a.trace) == (b.kind, b.param, b.weights, b.score, b.trace)
    imp = ("rrf", 60.0)
    seven, eight = (fit_fusion(p, list("ABC"), "recall@10", method="bagged", bags=4, seed=s, fixed_importance=imp)
                    for s in (7, 8))
    assert [t["weights"] for t in eight.trace[0]["path"]] == _greedy_on_bags(p, seed=8)  # the seed's own halves
    assert seven.weights != eight.weights
    assert draw_bags(40, 3, seed=1)[0].tolist() != draw_bags(40, 3, seed=2)[0].tolist()


@pytest.mark.parametrize("bags", [0, -1, 2.5, True])
def test_bad_bags_is_one_line(oracle_and_noise, bags):
    with pytest.raises(ValueError, match=rf"ensemble_fit_bags={bags!r}: must be an integer > 0"):
        fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10", method="bagged", bags=bags)


def test_a_fit_repeats_bit_for_bit(oracle_and_noise):
    a = fit_fusion(oracle_and_noise, ["noise", "oracle"], "ndcg@10")
    b = fit_fusion(oracle_and_noise, ["noise", "oracle"], "ndcg@10")
    assert (a.kind, a.param, a.weights, a.score, a.trace) == (b.kind, b.param, b.weights, b.score, b.trace)


def test_ties_keep_the_released_default(oracle_and_noise):
    """The oracle alone is perfect under every importance: the first candidate (exp, tau 10) stays."""
    f = fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10")
    assert (f.kind, f.param) == ("exp", 10.0) and list(DEFAULT_GRID)[0] == "exp" and DEFAULT_GRID["exp"][0] == 10.0
    assert len(f.trace) == sum(len(v) for v in DEFAULT_GRID.values())


def test_fixed_weights_search_only_the_importance(oracle_and_noise):
    f = fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10", weights=[1.0, 3.0])
    assert f.weights == [1.0, 3.0] and all(t["weights"] == [1.0, 3.0] for t in f.trace)
    # every importance candidate is still tried, and the best-scoring one wins (the earlier one on a tie)
    assert [(t["kind"], t["param"]) for t in f.trace] == [(k, v) for k, vs in DEFAULT_GRID.items() for v in vs]
    p = _mixed()
    g = fit_fusion(p, list("ABC"), "ndcg@10", weights=[1.0, 1.0, 1.0])
    scores = [t["score"] for t in g.trace]
    assert len(set(scores)) > 1 and g.score == max(scores)
    assert (g.kind, g.param) == next((t["kind"], t["param"]) for t in g.trace if t["score"] == max(scores))


def test_fixed_importance_searches_only_the_weights(oracle_and_noise):
    f = fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10", fixed_importance=("rrf", 30.0))
    assert (f.kind, f.param) == ("rrf", 30.0) and len(f.trace) == 1 and f.weights[0] == 0


def test_lists_padded_below_the_cut_off_count_the_rest_as_misses():
    """A catalogue smaller than the lists (padding -1): the top-3 holds the 2 listed items and a miss, normalised at 3,
    as RecBole's precision@3 and NDCG@3 of a ranking with those 2 items on top."""
    lists = _long([[[1, 2, -1, -1]], [[2, 1, -1, -1]]])
    indptr, items = _csr([[1, 5]])
    p = prepare(lists, indptr, items)
    fusion = Fusion(["A", "B"], "exp", 10.0, [2.0, 1.0])  # item 1 first
    assert score_fusion(p, fusion, "precision@3") == pytest.approx(1 / 3, rel=1e-15)
    assert score_fusion(p, fusion, "recall@3") == pytest.approx(1 / 2, rel=1e-15)
    assert score_fusion(p, fusion, "ndcg@3") == pytest.approx(1 / (1 + 1 / math.log2(3)), rel=1e-15)


@pytest.mark.parametrize("metric", ["precision@13", "ndcg@20"])
def test_a_cut_off_beyond_the_lists_is_refused(metric):
    """Lists of 12 items cannot give a top-13 that RecBole would rank: one line, not a score over padding."""
    p = _mixed()
    name, k = metric.split("@")
    with pytest.raises(ValueError, match=re.escape(f"{name}@{k} ranks more items than the teachers' lists hold "
                                                   "(12 each): score at a cut-off of at most 12")):
        fit_fusion(p, list("ABC"), metric)
    with pytest.raises(ValueError, match="ranks more items than the teachers' lists hold"):
        score_fusion(p, Fusion(list("ABC"), "exp", 10.0, [1.0, 1.0, 1.0]), metric)


def test_fusion_config_keys():
    f = Fusion(["BPR", "EASE"], "rrf", 30.0, [0.0, 2.0])
    assert f.config() == {"ensemble_importance": "rrf", "ensemble_rrf_k": 30.0,
                          "teacher_weights": {"BPR": 0.0, "EASE": 2.0}}
    assert f.describe() == "rrf rrf_k=30; weights BPR 0, EASE 2"


def test_halves_are_disjoint_and_cover():
    a, b = halves(11, seed=4)
    assert sorted(a.tolist() + b.tolist()) == list(range(11)) and len(a) == 5
    assert halves(11, seed=4)[0].tolist() == a.tolist() and halves(11, seed=5)[0].tolist() != a.tolist()


# ---------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("metric, message", [
    ("MAP@10", "valid_metric=MAP@10: the ensemble fit maximises one of Recall, Ndcg, Precision, Hit, Mrr"),
    ("Recall", "valid_metric=Recall: the ensemble fit maximises"),
    ("Recall@0", "valid_metric=Recall@0"),
])
def test_unknown_metric_is_one_line(metric, message):
    with pytest.raises(ValueError, match=message):
        parse_metric(metric)


@pytest.mark.parametrize("grid, message", [
    ({}, "must map importance kinds"),
    ({"gauss": [1]}, "ensemble_fit_grid names 'gauss': choose among exp, rrf, power"),
    ({"exp": []}, r"ensemble_fit_grid\[exp\]=\[\] must be a non-empty list"),
    ({"exp": [0]}, r"ensemble_fit_grid\[exp\] holds 0: each tau must be a number > 0"),
    ({"rrf": [True]}, r"ensemble_fit_grid\[rrf\] holds True"),
])
def test_bad_grid_is_one_line(grid, message):
    with pytest.raises(ValueError, match=message):
        check_grid(grid)


def test_unknown_method(oracle_and_noise):
    with pytest.raises(ValueError, match="ensemble_fit_method='best': choose one of greedy, coordinate, bagged"):
        fit_fusion(oracle_and_noise, ["noise", "oracle"], "recall@10", method="best")


def test_prepare_in_chunks_is_the_same_problem():
    """Blocks of users padded to the widest user of all: any chunk size gives the same tensors, also with users
    without validation items (dropped) and -1 padding in the lists."""
    gen = torch.Generator().manual_seed(5)
    m, u, n, items = 3, 23, 8, 40
    lists = torch.stack([torch.randperm(items, generator=gen)[:n] for _ in range(m * u)]).view(m, u, n)
    lists[1, 4, 5:] = -1
    lists[:, 7] = lists[0, 7]  # one user whose teachers agree: a narrow row
    counts = torch.randint(0, 4, (u,), generator=gen)
    indptr = torch.zeros(u + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    pos = torch.cat([torch.randperm(items, generator=gen)[:int(c)].sort().values for c in counts])
    whole = prepare(lists.int(), indptr, pos, chunk_users=u)
    assert whole.n_users == int((counts > 0).sum())
    for chunk in (1, 4, 10):
        part = prepare(lists, indptr, pos, chunk_users=chunk)
        assert torch.equal(part.ranks, whole.ranks) and torch.equal(part.hits, whole.hits)
        assert torch.equal(part.n_pos, whole.n_pos) and part.n == whole.n
