"""The HetComp student: Curriculum, HetComp model, HetCompTrainer (spec sections 5-7)."""

import math

import pytest
import torch

from recbole_hetcomp.distill.curriculum import Curriculum, ranking_discrepancy
from recbole_hetcomp.distill.losses import overall_loss, rank_loss
from recbole_hetcomp.model import HetComp
from recbole_hetcomp.run.teachers import fit_teacher
from recbole_hetcomp.run.training import load_data
from recbole_hetcomp.trainer import HetCompTrainer
from recbole_hetcomp.trajectories.store import Trajectory, TrajectoryStore

E1, E2 = math.exp(-0.1), math.exp(-0.2)


def traj(name, top, obs_lists):
    """A hand-built Trajectory: top int [T, U, N]; obs_lists one ranked list per user."""
    indptr = [0]
    for lst in obs_lists:
        indptr.append(indptr[-1] + len(lst))
    items = [i for lst in obs_lists for i in lst]
    return Trajectory(name, torch.tensor(top, dtype=torch.int32), torch.tensor(items, dtype=torch.int32),
                      torch.tensor(indptr, dtype=torch.int64))


@pytest.fixture
def hand_trajs():
    # 2 teachers, T=2 points, U=3 (user 0 is RecBole's padding user), N=4, items 1..9
    a = traj("A", [[[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]],
                   [[0, 0, 0, 0], [4, 3, 2, 1], [8, 7, 6, 5]]], [[], [7, 8, 9], [1]])
    b = traj("B", [[[0, 0, 0, 0], [2, 5, 1, 6], [5, 6, 7, 8]],
                   [[0, 0, 0, 0], [3, 4, 1, 2], [5, 6, 7, 8]]], [[], [8, 9, 7], [1]])
    return [a, b]


def make_curriculum(trajs, **kw):
    args = dict(k_target=3, p_obs=2, k=3, imp={"kind": "exp", "tau": 10.0}, alpha=1.05, period=10, start=10)
    args.update(kw)
    return Curriculum(trajs, 10, **args)


def test_curriculum_starts_at_point_zero_except_padding_user(hand_trajs):
    cur = make_curriculum(hand_trajs)
    assert cur.v.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert not cur.done


def test_curriculum_schedule(hand_trajs):
    cur = make_curriculum(hand_trajs)
    assert [e for e in range(0, 41) if cur.due(e)] == [10, 20, 30, 40]
    cur.v.fill_(1)
    assert cur.done and not cur.due(20)


def test_curriculum_without_dkc_starts_final(hand_trajs):
    cur = make_curriculum(hand_trajs, enabled=False)
    assert cur.done and cur.v.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert not cur.due(10)


def test_targets_are_the_ensemble_of_current_points(hand_trajs):
    cur = make_curriculum(hand_trajs)
    # user 1 at point 0: A = [1,2,3,4], B = [2,5,1,6]; exp(-r/10):
    # 1: 1 + e^-0.2 = 1.8187   2: e^-0.1 + 1 = 1.9048   5: e^-0.1 = 0.9048   3: e^-0.2 = 0.8187
    assert cur.targets()[1].tolist() == [2, 1, 5]
    cur.v[:, 1] = 1
    # point 1: A = [4,3,2,1], B = [3,4,1,2] -> 4 and 3 tie at 1 + e^-0.1; then 2 and 1 tie at e^-0.2 + e^-0.3
    assert set(cur.targets()[1, :2].tolist()) == {3, 4}


def test_observed_are_built_once_from_final_obs_rankings(hand_trajs):
    cur = make_curriculum(hand_trajs)
    # user 1: A ranks [7,8,9], B ranks [8,9,7]:
    # 7: 1 + e^-0.2 = 1.8187   8: e^-0.1 + 1 = 1.9048   9: e^-0.2 + e^-0.1 = 1.7236  -> P=2: [8, 7]
    assert cur.observed[1].tolist() == [8, 7]
    # user 2 has a single training item: padded with -1
    assert cur.observed[2].tolist() == [1, -1]
    before = cur.observed.clone()
    cur.v.fill_(1)
    cur.targets()
    assert torch.equal(cur.observed, before)


def test_curriculum_rejects_lists_shorter_than_k(hand_trajs):
    with pytest.raises(ValueError, match="trajectory_top_n"):
        make_curriculum(hand_trajs, k_target=5)


def test_curriculum_step_first_call_stores_then_advances(hand_trajs):
    cur = make_curriculum(hand_trajs)
    student = torch.tensor([[0, 0, 0], [9, 8, 7], [1, 2, 3]])
    assert cur.step(student, 10) == 0
    assert cur.v.tolist() == [[1, 0, 0], [1, 0, 0]]
    expected_last = ranking_discrepancy(student[1:2], torch.tensor([[4, 3, 2]]), k=3)
    assert cur.last[0, 1] == pytest.approx(float(expected_last[0]))
    # the student now equals point 1 of both teachers for user 1: D = 0, ratio +inf -> advance
    student2 = student.clone()
    student2[1] = torch.tensor([4, 3, 2])
    cur2 = make_curriculum(hand_trajs)
    cur2.step(student, 10)
    cur2.step(student2, 20)
    assert cur2.v[0, 1] == 1
    assert cur2.history[-1]["epoch"] == 20
    assert cur2.history[-1]["shares"][0] == pytest.approx([1 / 3, 2 / 3])


# ---------------------------------------------------------------------------
# the model, on the synthetic dataset

STUDENT = dict(embedding_size=4, hetcomp_k=20, hetcomp_p=5, dkc_k=10, trajectory_top_n=30)


@pytest.fixture(scope="session")
def teachers(synth_config, fresh_dir, tmp_path_factory):
    """BPR and EASE teachers on the synthetic data (N=30), trained once per session."""
    store = TrajectoryStore(tmp_path_factory.mktemp("store"))
    out = []
    with fresh_dir("teachers"):
        for name, extra in (("BPR", {"epochs": 8, "learning_rate": 0.05}), ("EASE", {})):
            out.append(fit_teacher(load_data(synth_config(name, trajectory_top_n=30, **extra)), store))
    return out


def student_data(synth_config, **over):
    return load_data(synth_config("HetComp", **{**STUDENT, **over}))


def test_train_mask_covers_history_and_padding(synth_config):
    data = student_data(synth_config)
    model = HetComp(data.config, data.train_dataset)
    csr = data.train_dataset.inter_matrix(form="csr")
    users = torch.tensor([1, 7])
    mask = model.train_mask(users)
    for row, u in enumerate(users.tolist()):
        expected = set(csr.indices[csr.indptr[u]:csr.indptr[u + 1]].tolist()) | {0}
        assert set(mask[row].nonzero().flatten().tolist()) == expected


def test_loss_is_the_weighted_spec_loss_of_the_batch_users(synth_config, teachers):
    data = student_data(synth_config)
    model = HetComp(data.config, data.train_dataset, trajectories=teachers)
    target = torch.randint(1, model.n_items, (model.n_users, 20))
    observed = torch.randint(1, model.n_items, (model.n_users, 5))
    inter = next(iter(data.train))
    users = torch.unique(inter[model.USER_ID])
    scores = (model.user_embedding(users) @ model.item_embedding.weight.t()).clamp(-40, 40)
    mask = model.train_mask(users)
    model.set_targets(target, observed, "overall")
    want = 0.01 * overall_loss(scores, observed[users], target[users], mask)
    torch.testing.assert_close(model.calculate_loss(inter), want)
    model.set_targets(target, observed, "rank")
    want = 0.005 * rank_loss(scores, observed[users], target[users], mask)
    torch.testing.assert_close(model.calculate_loss(inter), want)
    with pytest.raises(ValueError, match="loss_mode"):
        model.set_targets(target, observed, "listwise")


def test_model_without_targets_refuses_to_train(synth_config):
    data = student_data(synth_config)
    model = HetComp(data.config, data.train_dataset)
    with pytest.raises(RuntimeError, match="HetCompTrainer"):
        model.calculate_loss(next(iter(data.train)))
    with pytest.raises(ValueError, match="trajectories"):
        HetCompTrainer(data.config, model)


def test_full_sort_predict_and_top_unobserved(synth_config):
    data = student_data(synth_config)
    model = HetComp(data.config, data.train_dataset)
    users = torch.tensor([2, 5])
    full = model.full_sort_predict({model.USER_ID: users}).view(2, -1)
    torch.testing.assert_close(full, model.user_embedding.weight[users] @ model.item_embedding.weight.t())
    top = model.top_unobserved(10)
    assert top.shape == (model.n_users, 10)
    mask = model.train_mask(torch.arange(model.n_users))
    assert not mask.gather(1, top)[1:].any()


def test_default_student_is_small(synth_config):
    cfg = synth_config("HetComp")
    assert cfg["embedding_size"] == 6 and cfg["hetcomp_k"] == 100 and cfg["hetcomp_p"] == 10
    assert cfg["overall_loss_weight"] == 0.01 and cfg["rank_loss_weight"] == 0.005
    assert cfg["train_batch_size"] == 1024 and cfg["eval_step"] == 10 and cfg["stopping_step"] == 5
    # at most 1/8 of a 64-dimensional MF teacher
    assert cfg["embedding_size"] * 8 <= 64


# ---------------------------------------------------------------------------
# the trainer

def make_trainer(synth_config, teachers, **over):
    data = student_data(synth_config, **over)
    model = HetComp(data.config, data.train_dataset, trajectories=teachers).to(data.config["device"])
    return data, model, HetCompTrainer(data.config, model)


def test_without_dkc_the_final_ensemble_is_distilled_with_the_rank_loss(synth_config, teachers):
    _, model, trainer = make_trainer(synth_config, teachers, dkc=False)
    assert trainer.curriculum.done and model.loss_mode == "rank"
    assert trainer.loss_switch_epoch == 0
    final = Curriculum(teachers, model.n_items, k_target=20, p_obs=5, k=10, enabled=False,
                       imp=trainer.curriculum.imp, weights=trainer.curriculum.weights).targets()
    assert torch.equal(model.target.cpu(), final)


def test_without_akt_the_rank_loss_runs_during_the_curriculum(synth_config, teachers):
    _, model, trainer = make_trainer(synth_config, teachers, akt=False)
    assert not trainer.curriculum.done and model.loss_mode == "rank"


def test_curriculum_finishes_by_epoch_120_even_if_the_student_never_learns(synth_config, teachers):
    data, model, trainer = make_trainer(synth_config, teachers, learning_rate=0.0, weight_decay=0.0)
    assert model.loss_mode == "overall"
    before = model.user_embedding.weight.detach().clone()
    for epoch in range(0, 121):
        trainer._train_epoch(data.train, epoch)
        if epoch < 120:
            assert model.loss_mode == "overall", epoch
    assert torch.equal(model.user_embedding.weight, before)
    # constant distances (ratio exactly 1) hold until th < 1 at epoch 100, then one point per step
    assert trainer.dkc_done_epoch == 120 and trainer.loss_switch_epoch == 120
    assert model.loss_mode == "rank"
    steps = trainer.curriculum_summary()["steps"]
    assert [s["epoch"] for s in steps] == list(range(10, 121, 10))
    assert [s["advanced"] for s in steps][:9] == [0] * 9
    for s in steps:
        for row in s["shares"]:
            assert sum(row) == pytest.approx(1.0)


def test_short_run_beats_an_untrained_student(synth_config, teachers):
    from recbole_hetcomp.run.training import evaluate_model

    data, model, trainer = make_trainer(synth_config, teachers, epochs=60, learning_rate=0.01,
                                        eval_step=10, stopping_step=10)
    untrained = evaluate_model(model, data, phases=("test",))["test"]
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    trained = dict(trainer.evaluate(data.test, load_best_model=True))
    assert trained["recall@10"] > untrained["recall@10"] + 0.1
    assert trained["ndcg@10"] > untrained["ndcg@10"] + 0.1
    assert trainer.curriculum_summary()["steps"]


def test_tensors_follow_the_configured_device(synth_config, teachers):
    _, model, trainer = make_trainer(synth_config, teachers)
    device = trainer.device
    assert trainer.curriculum.tops.device.type == device.type
    assert model.target.device.type == device.type and model.history_items.device.type == device.type


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("student", ["MF", "LightGCN"])
def test_one_epoch_on_cuda(synth_config, teachers, student):
    data, model, trainer = make_trainer(synth_config, teachers, use_gpu=True, student=student)
    assert trainer.device.type == "cuda"
    for epoch in range(0, 11):
        trainer._train_epoch(data.train, epoch)
    assert trainer.curriculum.v.device.type == "cuda" and model.target.is_cuda


@pytest.mark.parametrize("use_gpu", [False, pytest.param(True, marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))], ids=["cpu", "cuda"])
def test_the_ensemble_row_runs_on_the_configured_device(synth_config, teachers, use_gpu):
    """The pipeline's ensemble row evaluates on the run's device (its lists go with it), leaves a teacher of weight
    0 out of its teachers, parameters and time, and scores what the same ensemble scores on the CPU."""
    from recbole_hetcomp.distill.fit import Fusion
    from recbole_hetcomp.model import HetCompEnsemble
    from recbole_hetcomp.run.pipeline import ensemble_row
    from recbole_hetcomp.run.training import evaluate_model

    names = [t.teacher for t in teachers]
    fusion = Fusion(names, "rrf", 60.0, [1.0, 0.0])
    rows = [{"name": n, "params": 10 * (i + 1), "infer_ms_per_1k_users": 2.0} for i, n in enumerate(names)]
    data = load_data(synth_config("HetCompEnsemble", trajectory_top_n=30, use_gpu=use_gpu))
    row = ensemble_row(data.config, data, teachers, rows, fusion, "fitted on validation")
    assert row["teachers"] == names[:1] and row["params"] == 10
    assert row["infer_ms_per_1k_users"] == row["fusion_ms_per_1k_users"] + 2.0
    cpu = load_data(synth_config("HetCompEnsemble", trajectory_top_n=30, use_gpu=False))
    alone = Fusion(names[:1], "rrf", 60.0, [1.0])
    reference = evaluate_model(HetCompEnsemble(cpu.config, cpu.train_dataset, trajectories=teachers[:1],
                                               fusion=alone), cpu)
    assert row["test"] == reference["test"] and row["valid"] == reference["valid"]


def test_student_keys_never_change_a_teachers_store_key(synth_config):
    import yaml

    from recbole_hetcomp.settings import properties_dir
    from recbole_hetcomp.trajectories.store import STUDENT_ONLY_KEYS, teacher_key

    base = load_data(synth_config("BPR"))
    tuned = load_data(synth_config("BPR", hetcomp_k=50, dkc_alpha=1.1, akt=False))
    assert teacher_key(base.config, base.fingerprint) == teacher_key(tuned.config, tuned.fingerprint)
    # every key HetComp.yaml adds is either student-only or one RecBole itself defines
    from pathlib import Path

    import recbole
    student = yaml.safe_load(open(properties_dir() / "model" / "HetComp.yaml"))
    rb = Path(recbole.__file__).parent / "properties"
    recbole_keys = set(yaml.safe_load(open(rb / "overall.yaml")))
    for f in (rb / "model").glob("*.yaml"):
        recbole_keys |= set(yaml.safe_load(open(f)) or {})
    assert set(student) - STUDENT_ONLY_KEYS <= recbole_keys


def test_clamped_scores_give_the_spec_loss_and_gradients(synth_config, teachers):
    """Scores far outside score_clamp on both sides: calculate_loss and the embeddings' gradients
    equal the spec losses of scores.clamp(-40, 40), batch after batch (the buffer is reused)."""
    data = student_data(synth_config)
    model = HetComp(data.config, data.train_dataset, trajectories=teachers)
    with torch.no_grad():
        model.user_embedding.weight.mul_(4000.0)
        model.item_embedding.weight.mul_(4000.0)
    target = torch.randint(1, model.n_items, (model.n_users, 20))
    observed = torch.randint(1, model.n_items, (model.n_users, 5))
    for mode, loss_fn, weight in (("overall", overall_loss, 0.01), ("rank", rank_loss, 0.005)):
        model.set_targets(target, observed, mode)
        for inter in list(data.train)[:2]:
            users = torch.unique(inter[model.USER_ID])
            raw = model.user_embedding(users) @ model.item_embedding.weight.t()
            assert raw.max() > 40 and raw.min() < -40 and (raw.abs() <= 40).any()
            want = weight * loss_fn(raw.clamp(-40, 40), observed[users], target[users], model.train_mask(users))
            want_grads = torch.autograd.grad(want, [model.user_embedding.weight, model.item_embedding.weight])
            got = model.calculate_loss(inter)
            got_grads = torch.autograd.grad(got, [model.user_embedding.weight, model.item_embedding.weight])
            torch.testing.assert_close(got, want)
            for g, w in zip(got_grads, want_grads):
                torch.testing.assert_close(g, w)


def test_a_one_shot_model_validates_whatever_eval_step(synth_config, fresh_dir, tmp_path):
    """RecBole's TraditionalTrainer sets epochs to 1 after choosing eval_step = min(eval_step, epochs): EASE with
    eval_step 3 was never validated, kept no checkpoint and failed when tested. Ours validates it once."""
    from recbole_hetcomp.run.training import load_data, train_model

    with fresh_dir("one_shot"):
        trainer, row = train_model(load_data(synth_config("EASE", eval_step=3)), tmp_path)
    assert trainer.eval_step == 1 and row["valid"] and row["test"]


# ---------------------------------------------------------------------------- hetcomp_batch: users


def test_user_batches_visit_every_user_with_history_once_an_epoch(synth_config, teachers):
    data, model, trainer = make_trainer(synth_config, teachers, hetcomp_batch="users", hetcomp_batch_size=7)
    counts = (model.history_indptr[1:] - model.history_indptr[:-1]).cpu()
    with_history = torch.nonzero(counts).view(-1)
    assert 0 not in with_history.tolist()  # RecBole's padding user has no history
    batches = trainer.user_batches
    assert len(batches) == -(-with_history.numel() // 7)
    epochs = []
    for _ in range(2):
        seen = [b[model.USER_ID] for b in batches]
        assert all(s.numel() == 7 for s in seen[:-1]) and 0 < seen[-1].numel() <= 7
        epochs.append(torch.cat(seen))
        assert torch.equal(torch.sort(epochs[-1]).values, with_history)  # each user exactly once
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch


def test_user_batches_are_the_steps_of_a_training_epoch(synth_config, teachers):
    data, model, trainer = make_trainer(synth_config, teachers, hetcomp_batch="users", hetcomp_batch_size=7)
    steps = []
    model.calculate_loss = lambda interaction: steps.append(interaction[model.USER_ID].clone()) or (
        model.user_embedding.weight.sum() * 0.0)
    trainer._train_epoch(data.train, 0)
    assert len(steps) == len(trainer.user_batches) and sum(s.numel() for s in steps) == (
        trainer.user_batches.users.numel())
    default = make_trainer(synth_config, teachers)[2]
    assert default.user_batches is None  # the released batching stays the default


def test_user_batches_train_a_student_that_beats_an_untrained_one(synth_config, teachers):
    from recbole_hetcomp.run.training import evaluate_model

    data, model, trainer = make_trainer(synth_config, teachers, hetcomp_batch="users", hetcomp_batch_size=16,
                                        epochs=60, learning_rate=0.01, eval_step=10, stopping_step=10)
    untrained = evaluate_model(model, data, phases=("test",))["test"]
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    trained = dict(trainer.evaluate(data.test, load_best_model=True))
    assert trained["recall@10"] > untrained["recall@10"] + 0.1


# ---------------------------------------------------------------------------- kd_method: the ranking-KD baselines


@pytest.mark.parametrize("method", ["rd", "rrd", "dcd", "cldrd", "dcd_overview", "cldrd_group"])
def test_a_kd_baseline_learns_the_final_ensemble_without_curriculum(synth_config, teachers, method):
    from recbole_hetcomp.run.training import evaluate_model

    data, model, trainer = make_trainer(synth_config, teachers, kd_method=method, epochs=40, learning_rate=0.01,
                                        eval_step=10, stopping_step=10, cldrd_stage_epochs=10, rd_warmup=5)
    final = Curriculum(teachers, model.n_items, k_target=20, p_obs=5, k=10, enabled=False,
                       imp=trainer.curriculum.imp, weights=trainer.curriculum.weights).targets()
    assert trainer.curriculum.done and torch.equal(model.target.cpu(), final)  # the final ensemble from epoch 0
    untrained = evaluate_model(model, data, phases=("test",))["test"]
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    assert not trainer.curriculum.history  # no DKC step ever ran
    trained = dict(trainer.evaluate(data.test, load_best_model=True))
    assert trained["recall@10"] > untrained["recall@10"] + 0.1, (method, untrained, trained)


def test_a_kd_baselines_loss_is_its_kd_term_plus_bpr(synth_config, teachers):
    from recbole_hetcomp.distill import kd

    data, model, trainer = make_trainer(synth_config, teachers, kd_method="rrd", kd_weight=0.5)
    batch = next(iter(data.train))
    users = torch.unique(batch[model.USER_ID])
    scores = model.forward(users).clamp(-model.clamp, model.clamp)
    kd_term = kd.rrd_loss(scores, model.target[users], model.train_mask(users))
    torch.manual_seed(0)
    total = model.calculate_loss(batch)
    torch.manual_seed(0)
    bpr = model._bpr_loss(batch, users, model.train_mask(users), scores)
    assert torch.allclose(total, 0.5 * kd_term + bpr)
    model.kd_method = "cldrd_group"  # the group reading has no base loss
    assert torch.allclose(model.calculate_loss(batch), 0.5 * kd.cldrd_group_loss(
        scores, model.target[users], model.train_mask(users), kd.cldrd_group_ends(0, 20)))
    model.kd_method, model.kd_stage = "cldrd", {"stage": 1}  # the target's 20 items are all candidates (< 30)
    top = model.target[users]
    torch.manual_seed(0)  # cldrd keeps BPR (cldrd_base: True), drawn as above
    assert torch.allclose(model.calculate_loss(batch), 0.5 * kd.cldrd_loss(
        scores.gather(1, top), kd.cldrd_labels(1, 20), top >= 0) + bpr)
    model.cldrd_candidates, model.cldrd_base = 7, False  # only the teacher's first 7 enter the loss; no BPR
    assert torch.allclose(model.calculate_loss(batch), 0.5 * kd.cldrd_loss(
        scores.gather(1, top[:, :7]), kd.cldrd_labels(1, 7), top[:, :7] >= 0))


def test_dcds_loss_is_bpr_plus_rrd_plus_both_corrections_on_the_refreshed_weights(synth_config, teachers):
    from recbole_hetcomp.distill import kd

    data, model, trainer = make_trainer(synth_config, teachers, kd_method="dcd", kd_weight=0.5, dcd_sample=3,
                                        dcd_eps=0.2)
    with pytest.raises(RuntimeError, match="no discrepancies yet"):
        model.calculate_loss(next(iter(data.train)))
    model.refresh_dcd(0.2)
    top = model.target
    users = torch.arange(model.n_users).unsqueeze(1).expand_as(top)
    full = model.forward(torch.arange(model.n_users)).detach()
    under, over = kd.dcd_discrepancies(full.gather(1, top.clamp(min=0)), top >= 0, 0.2)
    assert torch.equal(model.dcd["user_under"], under) and torch.equal(model.dcd["user_over"], over)
    lists, positions = kd.dcd_item_lists(top, model.n_items, top.shape[1])
    assert torch.equal(model.dcd["item_users"], lists) and torch.equal(model.dcd["item_pos"], positions)
    items = torch.arange(model.n_items).unsqueeze(1).expand_as(lists)
    under_i, _ = kd.dcd_discrepancies(full[lists.clamp(min=0), items], lists >= 0, 0.2, ranks=positions)
    assert torch.equal(model.dcd["item_under"], under_i)
    assert torch.allclose(model.pair_scores(users, top.clamp(min=0)), full.gather(1, top.clamp(min=0)))

    batch = next(iter(data.train))
    b_users = torch.unique(batch[model.USER_ID])
    b_items = torch.unique(batch[model.ITEM_ID])
    b_items = b_items[b_items > 0]
    scores = model.forward(b_users).clamp(-model.clamp, model.clamp)
    torch.manual_seed(3)
    total = model.calculate_loss(batch)
    torch.manual_seed(3)  # the same draws, in the loss's order: user side, item side, then BPR's negatives
    ucd = kd.dcd_correction(scores.gather(1, top[b_users].clamp(min=0)), kd.dcd_sample(under[b_users], 3),
                            kd.dcd_sample(over[b_users], 3))
    i_lists = lists[b_items]
    icd = kd.dcd_correction(full[i_lists.clamp(min=0), b_items.unsqueeze(1).expand_as(i_lists)],
                            kd.dcd_sample(under_i[b_items], 3), kd.dcd_sample(model.dcd["item_over"][b_items], 3),
                            ranks=positions[b_items])
    bpr = model._bpr_loss(batch, b_users, model.train_mask(b_users), scores)
    rrd = kd.rrd_loss(scores, top[b_users], model.train_mask(b_users))
    assert icd > 0 and ucd > 0
    assert torch.allclose(total, 0.5 * (ucd + icd + rrd) + bpr)
    model.dcd_rrd = False  # the authors' run_dcd.py: no RRD term
    torch.manual_seed(3)
    assert torch.allclose(model.calculate_loss(batch), 0.5 * (ucd + icd) + bpr)


def test_kd_baselines_stage_with_the_epoch(synth_config, teachers):
    _, model, trainer = make_trainer(synth_config, teachers, kd_method="cldrd", cldrd_stage_epochs=3)
    from recbole_hetcomp.distill import kd

    assert [trainer._baseline_stage(e)["stage"] for e in (0, 2, 3, 6, 9, 100)] == [0, 0, 1, 2, 3, 3]
    _, _, group = make_trainer(synth_config, teachers, kd_method="cldrd_group", cldrd_stage_epochs=3)
    assert [group._baseline_stage(e)["groups"] for e in (0, 2, 3, 6, 100)] == [
        kd.cldrd_group_ends(s, 20) for s in (0, 0, 1, 2, 2)]
    _, _, rd = make_trainer(synth_config, teachers, kd_method="rd", rd_warmup=4)
    assert [rd._baseline_stage(e)["dynamic"] for e in (0, 3, 4)] == [False, False, True]
    _, _, hetcomp = make_trainer(synth_config, teachers)
    assert hetcomp._baseline_stage(7) == {}


def test_dcd_refreshes_its_discrepancies_every_dcd_refresh_epochs(synth_config, teachers):
    data, model, trainer = make_trainer(synth_config, teachers, kd_method="dcd", dcd_refresh=2, dcd_eps=0.3)
    seen, refresh = [], model.refresh_dcd

    def spy(eps):
        seen.append((epoch, eps))
        refresh(eps)

    model.refresh_dcd = spy
    for epoch in range(5):
        trainer._train_epoch(data.train, epoch)
    assert seen == [(0, 0.3), (2, 0.3), (4, 0.3)]
    model.dcd.clear()  # resumed mid-period (nothing computed yet): refresh at once
    epoch = 5
    trainer._train_epoch(data.train, epoch)
    assert seen[-1] == (5, 0.3)
    # the weights travel with the checkpoint (RecBole's other_parameter), so a resumed run uses the last refresh's
    kept = {k: v.clone() for k, v in model.dcd.items()}
    trainer._save_checkpoint(5)
    model.dcd = {}
    trainer.load_best_checkpoint()
    assert set(model.dcd) == set(kept) and all(torch.equal(model.dcd[k], v) for k, v in kept.items())


def test_an_unknown_kd_method_is_one_line(synth_config):
    from recbole_hetcomp.schema import check_values

    must = "hetcomp, rd, rrd, dcd, cldrd, dcd_overview, cldrd_group"
    with pytest.raises(ValueError, match=rf"kd_method=distil: must be one of {must}"):
        check_values(synth_config("HetComp", kd_method="distil"))


# ---------------------------------------------------------------------------- student: any general RecBole model


def test_a_lightgcn_student_learns_with_hetcomps_losses(synth_config, teachers):
    from recbole_hetcomp.run.training import evaluate_model

    data, model, trainer = make_trainer(synth_config, teachers, student="LightGCN", embedding_size=4, epochs=40,
                                        learning_rate=0.01, eval_step=10, stopping_step=10)
    assert model.net is not None and model.net.n_layers == 2  # LightGCN's own RecBole default
    assert not hasattr(model, "user_embedding")
    assert sum(p.numel() for p in model.parameters()) == 4 * (model.n_users + model.n_items)
    untrained = evaluate_model(model, data, phases=("test",))["test"]
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    trained = dict(trainer.evaluate(data.test, load_best_model=True))
    assert trained["recall@10"] > untrained["recall@10"] + 0.1
    assert trainer.curriculum_summary()["steps"]  # DKC ran on the LightGCN student's own lists


def test_a_general_students_scores_follow_its_weights(synth_config, teachers):
    _, model, trainer = make_trainer(synth_config, teachers, student="LightGCN", embedding_size=4)
    users = torch.tensor([1, 2])
    model.eval()
    before = model.full_sort_predict({model.USER_ID: users}).clone()
    model.train()
    with torch.no_grad():
        model.net.user_embedding.weight.mul_(2.0)
    model.eval()  # a cache filled before the change must not answer
    assert not torch.allclose(model.full_sort_predict({model.USER_ID: users}), before)


def test_dcd_trains_a_general_student_through_its_pair_scores(synth_config, teachers):
    data, model, trainer = make_trainer(synth_config, teachers, student="LightGCN", embedding_size=4,
                                        kd_method="dcd", epochs=4, eval_step=2, stopping_step=10)
    users = torch.tensor([[1, 2, 2], [3, 1, 5]])
    items = torch.tensor([[4, 4, 7], [1, 2, 3]])
    full = model.forward(torch.arange(model.n_users))
    assert torch.allclose(model.pair_scores(users, items), full[users, items])
    model.refresh_dcd(0.1)
    batch = next(iter(data.train))
    b_users = torch.unique(batch[model.USER_ID])
    model.zero_grad()
    model._dcd_loss(batch, b_users, model.forward(b_users), model.target[b_users]).backward()
    grad = model.net.user_embedding.weight.grad  # the corrections alone reach the LightGCN student's weights
    assert grad is not None and grad.abs().sum() > 0
    before = model.net.user_embedding.weight.detach().clone()
    trainer.fit(data.train, data.valid, saved=False, show_progress=False)
    assert not torch.equal(model.net.user_embedding.weight, before)
    assert set(model.dcd) == {"user_under", "user_over", "item_users", "item_pos", "item_under", "item_over"}


@pytest.mark.parametrize("name, reason", [
    ("NeuMF", "cannot score the whole catalogue at once"),
    ("EASE", "fitted in one shot, not by gradient"),
    ("Pop", "fitted in one shot, not by gradient"),
    ("SASRec", "a SEQUENTIAL model; the student must be a general recommender"),
    ("Foo", "not a RecBole model"),
])
def test_a_student_that_cannot_learn_is_one_line(synth_config, teachers, name, reason):
    with pytest.raises(ValueError, match=f"student={name}: .*{reason}"):
        make_trainer(synth_config, teachers, student=name)


def test_a_general_student_without_gradient_is_one_line(synth_config, teachers, monkeypatch):
    from recbole.model.abstract_recommender import GeneralRecommender

    import recbole_hetcomp.model.hetcomp as hetcomp_model

    class Counts(GeneralRecommender):  # a general model whose full-catalogue scores are constants
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            self.w = torch.nn.Parameter(torch.zeros(1))

        def full_sort_predict(self, interaction):
            return torch.ones(interaction[self.USER_ID].numel() * self.n_items)

    monkeypatch.setattr(hetcomp_model, "recbole_model", lambda name: Counts)
    with pytest.raises(ValueError, match="student=Counts: its full-catalogue scores carry no gradient"):
        make_trainer(synth_config, teachers, student="Counts")


def test_a_model_file_saved_before_the_student_keys_loads_as_mf(synth_config, teachers):
    data = student_data(synth_config)
    for key in ("student", "kd_method", "kd_weight", "rd_lambda", "rd_mu"):
        data.config.final_config_dict.pop(key)  # what an older HetComp.pth's pickled config holds
    model = HetComp(data.config, data.train_dataset)
    assert model.net is None and model.kd_method == "hetcomp" and model.user_embedding.weight.shape[1] == 4


def test_dkc_lists_come_from_the_model_in_eval_mode(synth_config, teachers):
    _, model, _ = make_trainer(synth_config, teachers, student="NGCF", embedding_size=4)
    model.train()
    first = model.top_unobserved(10)
    assert model.training and torch.equal(model.top_unobserved(10), first)  # no dropout in them; mode restored


def test_a_kd_baselines_bpr_covers_every_training_item_of_a_user_batch(synth_config, teachers):
    _, model, _ = make_trainer(synth_config, teachers, kd_method="rd", hetcomp_batch="users")
    users = torch.tensor([1, 2, 5])
    mask = model.train_mask(users)
    scores = torch.zeros(3, model.n_items, requires_grad=True)
    loss = model._bpr_loss({model.USER_ID: users}, users, mask, scores)
    n_train = int((model.history_indptr[users + 1] - model.history_indptr[users]).sum())
    assert n_train > 3 and loss.item() == pytest.approx(n_train * math.log(2))  # a pair per training item, at 0


def test_curriculum_keeps_the_lists_as_int32_and_matches_a_long_computation():
    from recbole_hetcomp.distill.curriculum import dkc_step, gather_points
    from recbole_hetcomp.distill.ensemble import ensemble_top

    gen = torch.Generator().manual_seed(7)
    m, t, u, n, items = 3, 4, 30, 12, 60
    tops = torch.stack([torch.randperm(items - 1, generator=gen)[:n] + 1 for _ in range(m * t * u)]).view(m, t, u, n)
    obs = [[int(i) for i in torch.randperm(items - 1, generator=gen)[:3] + 1] for _ in range(u)]
    trajs = [traj(f"T{x}", tops[x].tolist(), obs) for x in range(m)]
    cur = Curriculum(trajs, items, k_target=8, p_obs=2, k=6, imp={"kind": "exp", "tau": 10.0})
    assert cur.tops.dtype == torch.int32  # half of long's memory: 1.3 GB instead of 2.7 at ml-20m's shape
    student = torch.stack([torch.randperm(items - 1, generator=gen)[:6] + 1 for _ in range(u)])
    cur.step(student, 10)
    cur.step(student.flip(1), 20)
    wide = tops.long()
    v, last, _ = dkc_step(student, wide, torch.where(torch.arange(u) == 0, t - 1, 0).expand(m, u),
                          torch.full((m, u), float("nan")), 10, first=True, k=6)
    v, last, _ = dkc_step(student.flip(1), wide, v, last, 20, first=False, k=6)
    assert torch.equal(cur.v, v) and torch.equal(cur.last.nan_to_num(-1.0), last.nan_to_num(-1.0))  # padding user: NaN
    want = ensemble_top(gather_points(wide, v), items, 8, **{"kind": "exp", "tau": 10.0})
    assert torch.equal(cur.targets(), want) and cur.targets().dtype == torch.long


def test_observed_top_in_chunks_equals_one_block():
    from recbole_hetcomp.distill.curriculum import observed_top

    gen = torch.Generator().manual_seed(3)
    lengths = [0, 1, 7, 2, 12, 3, 5]  # user 0 is padding; the longest user falls in one chunk only
    trajs = []
    for x in range(3):
        obs = [[int(i) for i in torch.randperm(40, generator=gen)[:n] + 1] for n in lengths]
        trajs.append(traj(f"T{x}", [[[1, 2]] * len(lengths)], obs))
    weights = torch.tensor([1.0, 0.5, 2.0])
    whole = observed_top(trajs, 41, 4, weights, {"kind": "rrf", "rrf_k": 3}, chunk_users=len(lengths))
    assert torch.equal(observed_top(trajs, 41, 4, weights, {"kind": "rrf", "rrf_k": 3}, chunk_users=2), whole)
    assert whole[0].tolist() == [-1] * 4 and (whole[1] >= 1).sum() >= 1 and (whole[2] >= 1).all()
