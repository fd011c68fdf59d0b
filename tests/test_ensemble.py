"""The ensemble g: importances, fused scores, top lists, and the HetCompEnsemble RecBole model."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from torch.testing import assert_close

from recbole_hetcomp.distill.ensemble import (
    csr_to_padded,
    ensemble_scores,
    ensemble_top,
    importance,
    importance_from_config,
    teacher_weight_vector,
)
from recbole_hetcomp.model import HetCompEnsemble
from recbole_hetcomp.run.training import evaluate_model, load_data
from recbole_hetcomp.trajectories.store import Trajectory

E = math.exp


def _long(rows):
    return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------------------
# importance()
# ---------------------------------------------------------------------------


def test_importance_exp():
    got = importance(_long([0, 10, 5]), kind="exp", tau=10.0)
    assert got.dtype == torch.float32
    assert_close(got, torch.tensor([1.0, E(-1.0), E(-0.5)]))
    assert_close(importance(_long([2]), kind="exp", tau=4.0), torch.tensor([E(-0.5)]))


def test_importance_rrf():
    assert_close(importance(_long([0, 1, 40]), kind="rrf", rrf_k=60), torch.tensor([1 / 60, 1 / 61, 1 / 100]))
    assert_close(importance(_long([0]), kind="rrf", rrf_k=1), torch.tensor([1.0]))


def test_importance_power():
    assert_close(importance(_long([0, 1, 3]), kind="power", power=0.05),
                 torch.tensor([1.0, 0.5 ** 0.05, 0.25 ** 0.05]))
    assert_close(importance(_long([1]), kind="power", power=1.0), torch.tensor([0.5]))


def test_importance_default_is_exp_tau_10():
    assert_close(importance(_long([0, 10])), torch.tensor([1.0, E(-1.0)]))


def test_importance_keeps_shape():
    assert importance(torch.zeros(2, 3, 4, dtype=torch.long)).shape == (2, 3, 4)


def test_importance_unknown_kind():
    with pytest.raises(ValueError, match="unknown ensemble_importance 'linear'") as err:
        importance(_long([0]), kind="linear")
    assert "exp, rrf, power" in str(err.value)


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_importance_exp_needs_positive_tau(tau):
    with pytest.raises(ValueError, match="ensemble_tau must be > 0"):
        importance(_long([0]), kind="exp", tau=tau)


def test_importance_from_config(synth_config):
    assert importance_from_config(synth_config("BPR")) == dict(kind="exp", tau=10.0, rrf_k=60.0, power=0.05)
    cfg = synth_config("BPR", ensemble_importance="rrf", ensemble_rrf_k=5, ensemble_tau=2, ensemble_power=0.5)
    imp = importance_from_config(cfg)
    assert imp == dict(kind="rrf", tau=2.0, rrf_k=5.0, power=0.5)
    assert_close(importance(_long([0, 1]), **imp), torch.tensor([1 / 5, 1 / 6]))


# ---------------------------------------------------------------------------
# ensemble_scores / ensemble_top
# ---------------------------------------------------------------------------

# M=2 teachers, B=1 user, I=6 items; teacher 0 lists [3, 1] (then padding), teacher 1 [1, 4, 2].
HAND_LISTS = _long([[[3, 1, -1]], [[1, 4, 2]]])
HAND_WEIGHTS = torch.tensor([1.0, 2.0])
HAND_SCORES = torch.tensor([[
    0.0,                          # item 0: in no list (padding must not land here)
    E(-0.1) + 2.0,                # item 1: rank 1 for teacher 0, rank 0 for teacher 1
    2 * E(-0.2),                  # item 2: rank 2 for teacher 1
    1.0,                          # item 3: rank 0 for teacher 0
    2 * E(-0.1),                  # item 4: rank 1 for teacher 1
    0.0,                          # item 5: in no list
]])


def test_ensemble_scores_by_hand():
    got = ensemble_scores(HAND_LISTS, 6, HAND_WEIGHTS, kind="exp", tau=10.0)
    assert got.shape == (1, 6)
    assert_close(got, HAND_SCORES)


def test_ensemble_scores_default_weights_are_one():
    got = ensemble_scores(HAND_LISTS, 6, kind="exp", tau=10.0)
    assert_close(got, torch.tensor([[0.0, E(-0.1) + 1.0, E(-0.2), 1.0, E(-0.1), 0.0]]))


def test_ensemble_scores_padding_ignored():
    padded = torch.cat([HAND_LISTS, torch.full((2, 1, 4), -1, dtype=torch.long)], dim=2)
    assert_close(ensemble_scores(padded, 6, HAND_WEIGHTS), HAND_SCORES)
    all_pad = torch.full((2, 1, 3), -1, dtype=torch.long)
    assert_close(ensemble_scores(all_pad, 6, HAND_WEIGHTS), torch.zeros(1, 6))


def test_ensemble_scores_users_do_not_mix():
    # user 0 as above; user 1 has different lists; a user's row must only see its own lists
    lists = _long([[[3, 1, -1], [0, -1, -1]], [[1, 4, 2], [5, 0, -1]]])
    got = ensemble_scores(lists, 6, HAND_WEIGHTS, kind="rrf", rrf_k=60)
    row1 = torch.tensor([1 / 60 + 2 / 61, 0, 0, 0, 0, 2 / 60])
    row0 = torch.tensor([0, 1 / 61 + 2 / 60, 2 / 62, 1 / 60, 2 / 61, 0])
    assert_close(got, torch.stack([row0, row1]))


def test_ensemble_top_by_hand():
    # scores: item1 2.905 > item4 1.810 > item2 1.637 > item3 1.0; items 0 and 5 in no list
    top = ensemble_top(HAND_LISTS, 6, k=4, weights=HAND_WEIGHTS)
    assert top.tolist() == [[1, 4, 2, 3]]
    assert ensemble_top(HAND_LISTS, 6, k=2, weights=HAND_WEIGHTS).tolist() == [[1, 4]]
    # fewer listed items than k: -1 padding, never an unlisted item
    assert ensemble_top(HAND_LISTS, 6, k=6, weights=HAND_WEIGHTS).tolist() == [[1, 4, 2, 3, -1, -1]]
    # k larger than the catalogue
    out = ensemble_top(HAND_LISTS, 6, k=8, weights=HAND_WEIGHTS)
    assert out.shape == (1, 8) and out.dtype == torch.long
    assert out.tolist() == [[1, 4, 2, 3, -1, -1, -1, -1]]


def test_ensemble_top_weights_change_order():
    # teacher 0 dominant: item3 = 3, item1 = 3e^-0.1 + 0.1 = 2.814, item4 = 0.1e^-0.1 = 0.0905,
    # item2 = 0.1e^-0.2 = 0.0819
    top = ensemble_top(HAND_LISTS, 6, k=4, weights=torch.tensor([3.0, 0.1]))
    assert top.tolist() == [[3, 1, 4, 2]]


def _random_lists(m, u, length, n_items, seed):
    g = torch.Generator().manual_seed(seed)
    lists = torch.stack([torch.stack([torch.randperm(n_items, generator=g)[:length] for _ in range(u)])
                         for _ in range(m)])
    lists[:, ::3, -2:] = -1  # some padded rows
    return lists


def test_ensemble_top_is_sorted_by_score():
    lists = _random_lists(3, 7, 6, 30, seed=1)
    w = torch.tensor([1.0, 0.37, 0.61])
    scores = ensemble_scores(lists, 30, w)
    top = ensemble_top(lists, 30, k=10, weights=w)
    for u in range(7):
        listed = {int(i) for i in lists[:, u].flatten() if i >= 0}
        row = [int(i) for i in top[u] if i >= 0]
        assert set(row) <= listed
        assert len(row) == min(10, len(listed))
        vals = scores[u, row]
        assert torch.all(vals[:-1] > vals[1:])  # strictly decreasing (no ties here)
        # nothing left out scores higher than the last one kept
        rest = sorted(listed - set(row))
        if rest:
            assert scores[u, rest].max() < vals[-1]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1024])
def test_ensemble_top_chunking_is_invisible(chunk):
    lists = _random_lists(3, 7, 6, 30, seed=2)
    w = torch.tensor([1.0, 0.37, 0.61])
    one = ensemble_top(lists, 30, k=12, weights=w, chunk_users=10_000)
    assert torch.equal(ensemble_top(lists, 30, k=12, weights=w, chunk_users=chunk), one)


def test_ensemble_top_ties_rank_the_lower_item_first():
    # item 5 tops teacher 0, item 2 tops teacher 1, item 4 is second in both: equal weights tie 5 and 2 exactly
    lists = _long([[[5, 4, 7]], [[2, 4, 9]]])
    for sparse in (True, False):
        top = ensemble_top(lists, 10, k=5, sparse=sparse)
        assert top.tolist() == [[4, 2, 5, 7, 9]], sparse  # 4: 2e^-0.1 > 1; then 2 before 5; 7 before 9
        # the tie at the cut: k=2 keeps the lower id
        assert ensemble_top(lists, 10, k=2, sparse=sparse).tolist() == [[4, 2]]


def _tied_lists(m, u, length, n_items, seed):
    """Lists over a small catalogue, so the same item sits at the same rank in several users' and teachers'
    lists and exact ties are common."""
    lists = _random_lists(m, u, length, n_items, seed)
    lists[:, 1::4, length // 2:] = -1
    return lists


@pytest.mark.parametrize("imp", [{"kind": "exp", "tau": 10.0}, {"kind": "rrf", "rrf_k": 3.0},
                                 {"kind": "power", "power": 0.5}])
@pytest.mark.parametrize("weights", [None, [1.0, 0.37, 0.61, 2.0], [1.0, 0.0, 1.0, 1.0]])
def test_ensemble_top_sparse_equals_the_dense_ranking(imp, weights):
    lists = _tied_lists(4, 40, 9, 64, seed=3)
    w = None if weights is None else torch.tensor(weights)
    sparse = ensemble_top(lists, 64, k=20, weights=w, chunk_users=7, sparse=True, **imp)
    assert torch.equal(sparse, ensemble_top(lists, 64, k=20, weights=w, chunk_users=13, sparse=False, **imp))
    # and both are the dense scores ranked by (score descending, item ascending)
    scores = ensemble_scores(lists, 64, w, **imp)
    for user in range(40):
        row = [int(i) for i in sparse[user] if i >= 0]
        listed = sorted(range(64), key=lambda i: (-float(scores[user, i]), i))
        assert row == [i for i in listed if scores[user, i] > 0][:20]


def test_ensemble_top_drops_a_weight_0_teacher_and_rejects_an_item_outside_the_catalogue():
    lists = _long([[[5, 4, 7]], [[2, 4, 9]]])
    for sparse in (True, False):
        assert ensemble_top(lists, 10, k=5, weights=torch.tensor([0.0, 1.0]), sparse=sparse).tolist() == \
            [[2, 4, 9, -1, -1]]
    with pytest.raises(ValueError, match="item 9, outside the catalogue of 9 items"):
        ensemble_top(lists, 9, k=5)


def test_teacher_weight_vector():
    assert_close(teacher_weight_vector(["A", "B", "C"], {"B": 2.5}), torch.tensor([1.0, 2.5, 1.0]))
    assert_close(teacher_weight_vector(["A", "B"]), torch.ones(2))
    assert_close(teacher_weight_vector(["A", "B"], {"A": 0, "B": 3}), torch.tensor([0.0, 3.0]))


def test_teacher_weight_vector_unknown_name():
    with pytest.raises(ValueError, match=r"unknown teachers \['D'\]") as err:
        teacher_weight_vector(["A", "B"], {"A": 1.0, "D": 2.0})
    assert "['A', 'B']" in str(err.value)


def test_teacher_weight_vector_needs_a_teacher_above_zero():
    # every caller (the pre-flight, the ensemble model, the student's trainer) gets the same line
    with pytest.raises(ValueError, match=r"^teacher_weights=\{'A': 0, 'B': 0\} gives every teacher weight 0: give at "
                                         r"least one a weight above 0$"):
        teacher_weight_vector(["A", "B"], {"A": 0, "B": 0})
    assert_close(teacher_weight_vector(["A", "B"], {"A": 0}), torch.tensor([0.0, 1.0]))  # B weighs 1 by default


def test_csr_to_padded_by_hand():
    indptr = [0, 2, 2, 5]
    items = [7, 3, 9, 8, 1]
    out = csr_to_padded(indptr, items)
    assert out.dtype == torch.long
    assert out.tolist() == [[7, 3, -1], [-1, -1, -1], [9, 8, 1]]
    assert csr_to_padded(indptr, items, users=[2, 0]).tolist() == [[9, 8, 1], [7, 3, -1]]
    assert csr_to_padded(indptr, items, users=[0], pad=0).tolist() == [[7, 3]]
    assert csr_to_padded(indptr, items, users=[1]).tolist() == [[-1]]
    from_numpy = csr_to_padded(np.array(indptr), np.array(items, dtype=np.int32), users=torch.tensor([2]))
    assert from_numpy.tolist() == [[9, 8, 1]]
    assert csr_to_padded(indptr, items, users=[]).shape == (0, 1)


# ---------------------------------------------------------------------------
# HetCompEnsemble on the synthetic dataset, checked against a direct computation
# ---------------------------------------------------------------------------

TAU = 10.0
WEIGHTS = {"A": 1.0, "B": 0.37}


def _user_items(dataset):
    out = defaultdict(set)
    uid, iid = dataset.uid_field, dataset.iid_field
    for u, i in zip(dataset.inter_feat[uid].tolist(), dataset.inter_feat[iid].tolist()):
        out[u].add(i)
    return out


def _hand_trajectory(name, train_dataset, n_points, seed):
    """Seeded random rankings over each user's unobserved items, as long as all users allow."""
    csr = train_dataset.inter_matrix(form="csr")
    n_users, n_items = train_dataset.user_num, train_dataset.item_num
    n = n_items - 1 - int(np.diff(csr.indptr).max())
    rng = np.random.default_rng(seed)
    top = np.zeros((n_points, n_users, n), dtype=np.int32)
    for u in range(1, n_users):
        unobserved = np.setdiff1d(np.arange(1, n_items), csr.indices[csr.indptr[u]:csr.indptr[u + 1]])
        for v in range(n_points):
            top[v, u] = rng.permutation(unobserved)[:n]
    return Trajectory(name, torch.from_numpy(top), torch.from_numpy(csr.indices.astype(np.int32)),
                      torch.from_numpy(csr.indptr.astype(np.int64)), {})


@pytest.fixture(scope="module")
def ens(synth_config, fresh_dir):
    with fresh_dir("ens_cwd"):
        config = synth_config("HetCompEnsemble", teacher_weights=dict(WEIGHTS))
        data = load_data(config)
        trajs = [_hand_trajectory("A", data.train_dataset, 2, seed=11),
                 _hand_trajectory("B", data.train_dataset, 2, seed=12)]
        model = HetCompEnsemble(config, data.train_dataset, trajectories=trajs)
        result = evaluate_model(model, data)
    return dict(config=config, data=data, trajs=trajs, model=model, result=result)


def _direct_scores(lists_by_teacher, weights):
    s = defaultdict(float)
    for items, w in zip(lists_by_teacher, weights):
        for r, i in enumerate(items):
            s[int(i)] += w * math.exp(-r / TAU)
    return s


def _direct_metrics(ens, phase):
    data, trajs = ens["data"], ens["trajs"]
    n_items = data.train_dataset.item_num
    train = _user_items(data.train_dataset)
    valid = _user_items(data.valid._dataset)
    test = _user_items(data.test._dataset)
    target, seen = (valid, train) if phase == "valid" else (test, {u: train[u] | valid[u] for u in train})
    ks = (10, 20)
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks}
    users = [u for u in sorted(target) if target[u]]
    for u in users:
        s = _direct_scores([t.top[-1, u].tolist() for t in trajs], [WEIGHTS[t.teacher] for t in trajs])
        cands = [i for i in range(1, n_items) if i not in seen[u]]
        ranked = sorted(cands, key=lambda i: -s[i])
        # the top 20 must be decided by positive, untied scores for the comparison to be exact
        assert s[ranked[19]] > 0 and s[ranked[19]] > s[ranked[20]]
        pos = target[u]
        for k in ks:
            hits = [p for p, i in enumerate(ranked[:k]) if i in pos]
            sums[f"recall@{k}"] += len(hits) / len(pos)
            dcg = sum(1 / math.log2(p + 2) for p in hits)
            idcg = sum(1 / math.log2(p + 2) for p in range(min(len(pos), k)))
            sums[f"ndcg@{k}"] += dcg / idcg
    return {key: v / len(users) for key, v in sums.items()}, len(users)


@pytest.mark.parametrize("phase", ["test", "valid"])
def test_ensemble_metrics_match_direct_computation(ens, phase):
    direct, n_users = _direct_metrics(ens, phase)
    assert n_users == ens["data"].train_dataset.user_num - 1  # every synthetic user is evaluated
    got = ens["result"][phase]
    for key, value in direct.items():
        assert got[key] == pytest.approx(value, abs=6e-5), key
    assert direct["recall@20"] > direct["recall@10"]  # sanity: the comparison is not trivially 0


def test_ensemble_full_sort_predict_equals_spec_formula(ens):
    model, trajs = ens["model"], ens["trajs"]
    uid = ens["data"].train_dataset.uid_field
    users = [1, 7, 30]
    got = model.full_sort_predict(Interaction({uid: torch.tensor(users)})).view(len(users), -1)
    for row, u in enumerate(users):
        s = _direct_scores([t.top[-1, u].tolist() for t in trajs], [1.0, 0.37])
        want = torch.tensor([s.get(i, 0.0) for i in range(got.shape[1])])
        assert_close(got[row], want)


def test_ensemble_predict_matches_full_sort(ens):
    model = ens["model"]
    ds = ens["data"].train_dataset
    users = torch.tensor([1, 1, 2, 5])
    items = torch.tensor([3, 10, 4, 70])
    got = model.predict(Interaction({ds.uid_field: users, ds.iid_field: items}))
    full = model.full_sort_predict(Interaction({ds.uid_field: users})).view(4, -1)
    assert_close(got, full[torch.arange(4), items])


def test_ensemble_points_select_per_teacher_and_user(ens):
    config, data, trajs = ens["config"], ens["data"], ens["trajs"]
    uid = data.train_dataset.uid_field
    n_users = data.train_dataset.user_num
    points = torch.ones(2, n_users, dtype=torch.long)  # final points everywhere ...
    points[0, 5] = 0                                    # ... except teacher A for user 5
    points[1, 9] = 0                                    # ... and teacher B for user 9
    model = HetCompEnsemble(config, data.train_dataset, trajectories=trajs, points=points)
    default = ens["model"]
    inter = Interaction({uid: torch.tensor([5, 9, 12])})
    got = model.full_sort_predict(inter).view(3, -1)
    base = default.full_sort_predict(inter).view(3, -1)
    n_items = got.shape[1]
    for row, (u, pa, pb) in enumerate([(5, 0, 1), (9, 1, 0), (12, 1, 1)]):
        s = _direct_scores([trajs[0].top[pa, u].tolist(), trajs[1].top[pb, u].tolist()], [1.0, 0.37])
        assert_close(got[row], torch.tensor([s.get(i, 0.0) for i in range(n_items)]))
    assert not torch.allclose(got[0], base[0]) and not torch.allclose(got[1], base[1])
    assert_close(got[2], base[2])
    # item 0 / user 0 row aside, the stored lists are those of the chosen points
    assert torch.equal(model.lists[0, 5], trajs[0].top[0, 5].long())
    assert torch.equal(model.lists[1, 5], trajs[1].top[1, 5].long())
    all_first = HetCompEnsemble(config, data.train_dataset, trajectories=trajs,
                                points=torch.zeros(2, n_users, dtype=torch.long))
    assert torch.equal(all_first.lists, torch.stack([t.top[0] for t in trajs]).long())


def test_ensemble_weights_come_from_config(ens):
    assert_close(ens["model"].weights, torch.tensor([1.0, 0.37]))
    assert ens["model"].teacher_names == ["A", "B"]


def test_ensemble_rejects_bad_construction(ens, synth_config):
    config, data, trajs = ens["config"], ens["data"], ens["trajs"]
    with pytest.raises(ValueError, match="needs the teachers' trajectories"):
        HetCompEnsemble(config, data.train_dataset)
    small = Trajectory("C", trajs[0].top[:, :10], trajs[0].obs_items, trajs[0].obs_indptr[:11], {})
    with pytest.raises(ValueError, match=f"teacher C has 10 users, the dataset has {data.train_dataset.user_num}"):
        HetCompEnsemble(config, data.train_dataset, trajectories=[trajs[0], small])
    bad = synth_config("HetCompEnsemble", teacher_weights={"A": 1.0, "Z": 2.0})
    with pytest.raises(ValueError, match=r"unknown teachers \['Z'\]"):
        HetCompEnsemble(bad, data.train_dataset, trajectories=trajs)
