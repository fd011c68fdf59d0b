"""The run's fusion (run/fusion.py): fitted on validation from real teachers' lists, stored and re-used,
never reading the test split, and yielding to what the user sets."""

import json

import pytest
import torch

from recbole_hetcomp.distill.fit import Fusion, score_fusion
from recbole_hetcomp.model import HetCompEnsemble
from recbole_hetcomp.run.fusion import choose_fusion, validation_problem
from recbole_hetcomp.run.pipeline import build_teachers
from recbole_hetcomp.run.training import evaluate_model, load_data
from recbole_hetcomp.trajectories.store import TrajectoryStore

TEACHERS = ["BPR", "EASE", "CML"]
SMALL = {"epochs": 4, "trajectory_top_n": 30, "valid_metric": "Recall@20", "show_progress": False, "state": "ERROR"}


@pytest.fixture(scope="module")
def run(synth_config, synth_shared, fresh_dir, tmp_path_factory):
    data_path, name = synth_shared
    store = tmp_path_factory.mktemp("fusion_store")
    config = {**SMALL, "data_path": str(data_path), "trajectory_store": str(store)}
    with fresh_dir("fusion"):
        _, trajectories = build_teachers(name, TEACHERS, config_dict=config)
        base = synth_config("HetCompEnsemble", **{k: v for k, v in config.items() if k != "data_path"})
        data = load_data(base)
    return {"base": base, "data": data, "trajectories": trajectories, "store": TrajectoryStore(store),
            "config": config, "synth_config": synth_config}


def _config(run, **over):
    return run["synth_config"]("HetCompEnsemble", **{k: v for k, v in {**run["config"], **over}.items()
                                                     if k != "data_path"})


def test_the_fit_scores_as_recbole_evaluates(run):
    """The fit's score of a fusion, from the lists alone, is RecBole's validation metric of that ensemble."""
    fusion = Fusion(TEACHERS, "exp", 7.0, [1.0, 0.7, 0.3])
    ensemble = HetCompEnsemble(run["base"], run["data"].train_dataset, trajectories=run["trajectories"],
                               fusion=fusion)
    valid = evaluate_model(ensemble, run["data"], phases=("valid",))["valid"]
    problem, _ = validation_problem(run["data"], run["trajectories"])
    for metric in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert round(score_fusion(problem, fusion, metric), 4) == valid[metric], metric


def test_the_fit_is_at_least_the_best_teacher_on_validation(run):
    chosen = choose_fusion(run["base"], run["data"], run["trajectories"])
    assert chosen.fitted
    best = max(t.meta["valid"]["recall@20"] for t in run["trajectories"])
    assert chosen.fusion.score >= best - 1e-4  # RecBole rounds to 4 places
    record = chosen.record
    assert record["valid_score"] == chosen.fusion.score and record["teachers"] == TEACHERS
    assert record["best_teacher"]["score"] <= record["valid_score"]
    assert record["settings"]["metric"] == "recall@20" and record["split_fingerprint"] == run["data"].fingerprint


def test_held_out_halves(run):
    """Each fold fits on one half of the validation users and is scored on the other half, never on its own: rebuilt
    here from the halves, the fold's fusion and its scores are the record's exactly."""
    from recbole_hetcomp.distill.fit import halves
    from recbole_hetcomp.run.fusion import config_fusion, fit_settings, fit_with_settings

    record = choose_fusion(run["base"], run["data"], run["trajectories"]).record
    held = record["held_out"]
    problem, _ = validation_problem(run["data"], run["trajectories"])
    settings, given = fit_settings(run["base"]), config_fusion(run["base"], TEACHERS)
    a, b = halves(problem.n_users, run["base"]["seed"])
    assert len(held["folds"]) == 2 and a.numel() + b.numel() == record["users"]
    own = []
    for fold, (fit_rows, score_rows) in zip(held["folds"], ((a, b), (b, a))):
        fitted = fit_with_settings(problem.subset(fit_rows), TEACHERS, settings)
        scored = problem.subset(score_rows)
        assert fold["users"] == [fit_rows.numel(), score_rows.numel()]
        assert fold["fusion"] == fitted.describe()
        assert fold["fitted"] == score_fusion(scored, fitted, settings["metric"])
        assert fold["equal_weights"] == score_fusion(scored, given, settings["metric"])
        own.append(score_fusion(problem.subset(fit_rows), fitted, settings["metric"]))
    assert held["fitted"] == pytest.approx(sum(f["fitted"] for f in held["folds"]) / 2)
    assert held["fitted"] != pytest.approx(sum(own) / 2)  # scored in-sample, the folds would read otherwise


@pytest.mark.parametrize("method", ["greedy", "coordinate", "bagged"])
def test_every_fit_records_its_best_teacher(run, method):
    """Whatever the search, the record names the best single teacher on validation and, on each held-out fold, the
    teacher best on the fitting half scored on the other half, in the fit's own metric."""
    from recbole_hetcomp.distill.fit import halves

    record = choose_fusion(_config(run, ensemble_fit_method=method), run["data"], run["trajectories"]).record
    problem, _ = validation_problem(run["data"], run["trajectories"])
    alone = lambda x, p: score_fusion(p, Fusion(TEACHERS, "exp", 10.0, [float(i == x) for i in range(3)]),  # noqa: E731
                                      "recall@20")
    singles = [alone(x, problem) for x in range(3)]
    assert record["best_teacher"] == {"name": TEACHERS[singles.index(max(singles))], "score": max(singles)}
    a, b = halves(problem.n_users, run["base"]["seed"])
    for fold, (fit_rows, score_rows) in zip(record["held_out"]["folds"], ((a, b), (b, a))):
        on_fit = [alone(x, problem.subset(fit_rows)) for x in range(3)]
        x = on_fit.index(max(on_fit))
        assert fold["best_teacher"] == {"name": TEACHERS[x], "score": alone(x, problem.subset(score_rows))}
    folds = record["held_out"]["folds"]
    assert record["held_out"]["best_teacher"] == pytest.approx((folds[0]["best_teacher"]["score"]
                                                                + folds[1]["best_teacher"]["score"]) / 2)


def test_a_cut_off_beyond_the_lists_is_fitted_at_their_length(run, caplog):
    """The lists hold 30 items (trajectory_top_n): a fit asked for Recall@50 maximises Recall@30, which it scores as
    RecBole would, records so and says why; within the lists' length the metric is kept."""
    from recbole_hetcomp.run.fusion import within_lists

    settings = {"metric": "ndcg@20", "method": "greedy"}
    assert within_lists(settings, 20) is settings
    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        assert within_lists(settings, 12) == {"metric": "ndcg@12", "method": "greedy"}
    assert "the teachers' lists hold 12 items, fewer than ndcg@20 ranks: the fit maximises ndcg@12 (raise " \
           "--trajectory_top_n to at least 20 to fit at 20)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        assert within_lists(settings, 12, warn=False)["metric"] == "ndcg@12" and not caplog.text
    chosen = choose_fusion(_config(run, valid_metric="Recall@50"), run["data"], run["trajectories"])
    assert chosen.record["settings"]["metric"] == "recall@30"
    problem, _ = validation_problem(run["data"], run["trajectories"])
    assert chosen.record["valid_score"] == score_fusion(problem, chosen.fusion, "recall@30")


def test_the_check_before_a_run_says_the_fit_metric_is_lowered(run, caplog):
    from recbole_hetcomp.run.preflight import check_pipeline

    config = {k: v for k, v in run["config"].items() if k != "valid_metric"}  # the default Recall@50
    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        check_pipeline(run["base"]["dataset"], ["BPR", "EASE"], student=True,
                       config_dict={**config, "hetcomp_k": 20, "dkc_k": 10, "hetcomp_p": 5})
    assert "the teachers' lists hold 30 items, fewer than recall@50 ranks: the fit maximises recall@30" in caplog.text


def test_the_test_split_is_never_read(run):
    """Permuting the test items changes nothing in the fit, bit for bit."""
    data = run["data"]
    before = choose_fusion(run["base"], data, run["trajectories"]).record
    feat = data.test._dataset.inter_feat
    iid = data.train_dataset.iid_field
    original = feat[iid].clone()
    feat[iid] = original[torch.randperm(len(original), generator=torch.Generator().manual_seed(1))]
    try:
        after = choose_fusion(run["base"], data, run["trajectories"]).record
    finally:
        feat[iid] = original
    strip = lambda r: {k: v for k, v in r.items() if k != "fit_s"}  # noqa: E731
    assert json.dumps(strip(after), sort_keys=True) == json.dumps(strip(before), sort_keys=True)


def test_a_stored_fit_is_reused_and_refit_redoes_it(run, tmp_path):
    store = TrajectoryStore(tmp_path / "store")
    first = choose_fusion(run["base"], run["data"], run["trajectories"], store)
    again = choose_fusion(run["base"], run["data"], run["trajectories"], store)
    assert not first.record["reused"] and again.record["reused"]
    assert (again.fusion.kind, again.fusion.param, again.fusion.weights) == \
        (first.fusion.kind, first.fusion.param, first.fusion.weights)
    files = list((tmp_path / "store" / "synth" / "fits").glob("fit-*.json"))
    assert len(files) == 1 and not [p for p in files[0].parent.iterdir() if p.name.startswith(".")]
    refit = choose_fusion(run["base"], run["data"], run["trajectories"], store, refit=True)
    assert not refit.record["reused"] and refit.fusion.weights == first.fusion.weights
    # other search settings are another fit
    other = choose_fusion(_config(run, ensemble_fit_grid={"rrf": [60]}), run["data"], run["trajectories"], store)
    assert not other.record["reused"] and other.fusion.kind == "rrf"
    assert len(list(files[0].parent.glob("fit-*.json"))) == 2
    # a damaged file is fitted again, not trusted
    files[0].write_text("{not json")
    assert not choose_fusion(run["base"], run["data"], run["trajectories"], store).record["reused"]


def test_the_bagged_fit_records_its_bags_and_is_keyed_by_them(run, tmp_path):
    """Only the bagged search carries its bags and their seed in its settings (the others' stored fits keep their
    keys); another number of bags, or another seed, is another fit."""
    store = TrajectoryStore(tmp_path / "store")
    greedy = choose_fusion(run["base"], run["data"], run["trajectories"], store).record
    assert "bags" not in greedy["settings"] and "bag_seed" not in greedy["settings"]
    bagged = choose_fusion(_config(run, ensemble_fit_method="bagged", ensemble_fit_bags=3), run["data"],
                           run["trajectories"], store)
    settings = bagged.record["settings"]
    assert (settings["method"], settings["bags"], settings["bag_seed"]) == ("bagged", 3, run["base"]["seed"])
    assert not bagged.record["reused"] and bagged.record["valid_score"] >= bagged.record["best_teacher"]["score"]
    assert len(bagged.record["trace"][0]["path"]) == 3
    for over in ({"ensemble_fit_bags": 3}, {"ensemble_fit_bags": 4}, {"ensemble_fit_bags": 3, "seed": 7}):
        again = choose_fusion(_config(run, ensemble_fit_method="bagged", **over), run["data"], run["trajectories"],
                              store)
        assert again.record["reused"] == (over == {"ensemble_fit_bags": 3}), over


def test_retrained_lists_or_another_split_are_another_fit(run, tmp_path):
    """A stored fit is keyed by each teacher's stored lists (their checksum) and the split's fingerprint: a teacher
    retrained to other lists, or another split, is fitted again, never served the old fit."""
    import copy
    import dataclasses

    store = TrajectoryStore(tmp_path / "store")
    first = choose_fusion(run["base"], run["data"], run["trajectories"], store)
    assert choose_fusion(run["base"], run["data"], run["trajectories"], store).record["reused"]
    retrained = [copy.copy(t) for t in run["trajectories"]]
    files = retrained[1].meta["files"]
    retrained[1].meta = {**retrained[1].meta, "files": {**files, "top.npy": {**files["top.npy"], "sha256": "0" * 64}}}
    assert not choose_fusion(run["base"], run["data"], retrained, store).record["reused"]
    other_split = dataclasses.replace(run["data"], fingerprint="f" * 64)
    again = choose_fusion(run["base"], other_split, run["trajectories"], store)
    assert not again.record["reused"] and again.record["split_fingerprint"] == "f" * 64
    assert len(list((tmp_path / "store" / "synth" / "fits").glob("fit-*.json"))) == 3
    assert choose_fusion(run["base"], run["data"], run["trajectories"], store).fusion.weights == first.fusion.weights


def test_ensemble_fit_metric_is_what_the_fit_maximises(run, tmp_path):
    """Set, ``ensemble_fit_metric`` replaces ``valid_metric`` as the fit's objective (and is another stored fit);
    left unset, the fit and its key are the ``valid_metric`` ones."""
    store = TrajectoryStore(tmp_path / "store")
    default = choose_fusion(run["base"], run["data"], run["trajectories"], store)
    same = choose_fusion(_config(run, ensemble_fit_metric="Recall@20"), run["data"], run["trajectories"], store)
    assert same.record["reused"] and same.fusion.weights == default.fusion.weights  # the same objective, the same key
    ndcg = choose_fusion(_config(run, ensemble_fit_metric="NDCG@5"), run["data"], run["trajectories"], store)
    assert not ndcg.record["reused"] and ndcg.record["settings"]["metric"] == "ndcg@5"
    problem, _ = validation_problem(run["data"], run["trajectories"])
    assert ndcg.fusion.score == score_fusion(problem, ndcg.fusion, "ndcg@5")
    singles = [score_fusion(problem, Fusion(TEACHERS, "exp", 10.0, [float(i == j) for j in range(3)]), "ndcg@5")
               for i in range(3)]
    assert ndcg.fusion.score >= max(singles)  # greedy starts from the best teacher of its own metric
    with pytest.raises(ValueError, match=r"^ensemble_fit_metric=MAP@10: the ensemble fit maximises one of Recall, "
                                         r"Ndcg, Precision, Hit, Mrr at a cut-off, e.g. Recall@50; set "
                                         r"ensemble_fit_metric to one, or ensemble_fit to False$"):
        choose_fusion(_config(run, ensemble_fit_metric="MAP@10"), run["data"], run["trajectories"])


def test_other_teachers_are_another_fit(run, tmp_path):
    store = TrajectoryStore(tmp_path / "store")
    choose_fusion(run["base"], run["data"], run["trajectories"], store)
    two = choose_fusion(run["base"], run["data"], run["trajectories"][:2], store)
    assert not two.record["reused"] and two.fusion.teachers == TEACHERS[:2]


def test_the_users_weights_win(run):
    chosen = choose_fusion(_config(run, teacher_weights={"BPR": 2.0, "CML": 0.5}), run["data"], run["trajectories"])
    assert chosen.fitted and chosen.fusion.weights == [2.0, 1.0, 0.5]  # only the importance was searched
    assert chosen.record["fixed"] == {"weights": [2.0, 1.0, 0.5]}


def test_the_users_importance_wins(run):
    chosen = choose_fusion(_config(run, ensemble_tau=30.0), run["data"], run["trajectories"])
    assert chosen.fitted and (chosen.fusion.kind, chosen.fusion.param) == ("exp", 30.0)


def test_weights_and_importance_given_means_no_fit(run):
    chosen = choose_fusion(_config(run, teacher_weights={"EASE": 3.0}, ensemble_importance="rrf"), run["data"],
                           run["trajectories"])
    assert not chosen.fitted and chosen.record is None
    assert (chosen.fusion.kind, chosen.fusion.param, chosen.fusion.weights) == ("rrf", 60.0, [1.0, 3.0, 1.0])
    assert chosen.label == "teacher_weights"


def test_ensemble_fit_false_is_the_config_fusion(run):
    chosen = choose_fusion(_config(run, ensemble_fit=False), run["data"], run["trajectories"])
    assert not chosen.fitted and chosen.fusion.weights == [1.0, 1.0, 1.0] and chosen.label == "equal weights"


def test_weight_zero_teachers_drop_out(run):
    fusion = choose_fusion(_config(run, ensemble_fit=False, teacher_weights={"CML": 0.0}), run["data"],
                           run["trajectories"])
    assert [t.teacher for t in fusion.active(run["trajectories"])] == ["BPR", "EASE"]
    assert fusion.config(run["trajectories"])["teacher_weights"] == {"BPR": 1.0, "EASE": 1.0}


def test_a_teacher_of_weight_0_does_not_reach_the_student(run, tmp_path):
    """The benchmarks compare rows on the fusion and its teachers of weight above 0 only (accuracy.distilled): a
    student trained beside another teacher of weight 0, whatever its lists, is bit for bit the same student."""
    from dataclasses import replace

    from recbole_hetcomp.run.fusion import RunFusion
    from recbole_hetcomp.run.pipeline import train_student

    other = [t if t.teacher != "CML" else replace(t, top=t.top.flip(-1)) for t in run["trajectories"]]

    def student(trajectories, cml_weight):
        workdir = tmp_path / f"{len(list(tmp_path.iterdir()))}"
        workdir.mkdir()
        fusion = RunFusion(Fusion(TEACHERS, "exp", 10.0, [1.0, 2.0, cml_weight]), fitted=True)
        config = {**run["config"], "hetcomp_k": 20, "hetcomp_p": 5, "dkc_k": 10}
        row, _ = train_student(run["data"].config["dataset"], trajectories, workdir, None, config,
                               fusion=fusion)
        return {k: row[k] for k in ("test", "valid", "epochs")}

    assert student(run["trajectories"], 0.0) == student(other, 0.0)
    assert student(run["trajectories"], 0.5) != student(other, 0.5)  # where CML weighs, its lists count


def test_the_yaml_grid_is_the_fits_default():
    import yaml

    from recbole_hetcomp.distill.fit import DEFAULT_GRID, check_grid
    from recbole_hetcomp.settings import properties_dir

    overall = yaml.safe_load((properties_dir() / "overall.yaml").read_text())
    assert check_grid(overall["ensemble_fit_grid"]) == DEFAULT_GRID and overall["ensemble_fit"] is True


def test_ensemble_fit_users_scores_a_seeded_sample(run):
    """Beyond ``ensemble_fit_users`` validation users the fit (and its held-out halves) scores a sample drawn by the
    seed: the same sample, so the same fit, on a rerun; all users without the cap."""
    from recbole_hetcomp.distill.fit import fit_fusion, sample_users

    full = choose_fusion(run["base"], run["data"], run["trajectories"]).record
    n = full["users"]
    assert full["users_validated"] == n and full["settings"]["users"] == 20000 and n < 20000
    capped = choose_fusion(_config(run, ensemble_fit_users=n // 3), run["data"], run["trajectories"]).record
    assert (capped["users"], capped["users_validated"]) == (n // 3, n)
    assert sum(capped["held_out"]["folds"][0]["users"]) == n // 3
    rows = sample_users(n, n // 3, run["base"]["seed"])
    assert rows.numel() == n // 3 and bool((rows[1:] > rows[:-1]).all()) and torch.equal(sample_users(n, n), torch.arange(n))
    problem = validation_problem(run["data"], run["trajectories"])[0].subset(rows)
    sampled, total = validation_problem(run["data"], run["trajectories"], n // 3, run["base"]["seed"])
    assert total == n and torch.equal(sampled.hits, problem.hits[:, :sampled.hits.shape[1]])  # only the sample prepared
    alone = fit_fusion(problem, TEACHERS, "recall@20", grid=capped["settings"]["grid"])
    assert (alone.kind, alone.param, alone.weights, alone.score) == (
        capped["fusion"]["kind"], capped["fusion"]["param"], capped["fusion"]["weights"], capped["valid_score"])
    assert capped["settings"]["sample_seed"] == run["base"]["seed"] and "sample_seed" not in full["settings"]
    with pytest.raises(ValueError, match="ensemble_fit_users=0: must be an integer > 0"):
        choose_fusion(_config(run, ensemble_fit_users=0), run["data"], run["trajectories"])


def test_a_sampled_fit_is_stored_per_seed(run, tmp_path):
    """Past ensemble_fit_users the fit depends on the seed's sample: another seed is another stored fit, not the first
    one re-used; unsampled, the key has no seed and is what it was."""
    store = TrajectoryStore(tmp_path / "store")
    n = choose_fusion(run["base"], run["data"], run["trajectories"]).record["users"]
    first = choose_fusion(_config(run, ensemble_fit_users=n // 3), run["data"], run["trajectories"], store)
    again = choose_fusion(_config(run, ensemble_fit_users=n // 3), run["data"], run["trajectories"], store)
    other = choose_fusion(_config(run, ensemble_fit_users=n // 3, seed=7), run["data"], run["trajectories"], store)
    assert not first.record["reused"] and again.record["reused"] and not other.record["reused"]
    assert other.record["settings"]["sample_seed"] == 7 and other.record["held_out"]["seed"] == 7


def test_an_importance_parameter_of_another_kind_is_one_line(synth_config):
    """``--ensemble_rrf_k=30`` alone would fix the default exp importance and leave 30 unused: an error naming the fix;
    with its kind named, or for the kind in use, the parameter is accepted."""
    from recbole_hetcomp.run.fusion import check_fusion_keys

    with pytest.raises(ValueError, match=r"^ensemble_rrf_k=30 is the parameter of ensemble_importance=rrf, but "
                                         r"ensemble_importance is exp: also set ensemble_importance=rrf, or drop "
                                         r"ensemble_rrf_k$"):
        check_fusion_keys(synth_config("HetCompEnsemble", ensemble_rrf_k=30))
    with pytest.raises(ValueError, match=r"^ensemble_tau=5.0 is the parameter of ensemble_importance=exp, but "
                                         r"ensemble_importance is power"):
        check_fusion_keys(synth_config("HetCompEnsemble", ensemble_importance="power", ensemble_tau=5.0))
    check_fusion_keys(synth_config("HetCompEnsemble", ensemble_importance="rrf", ensemble_rrf_k=30))
    check_fusion_keys(synth_config("HetCompEnsemble", ensemble_tau=30.0))  # exp is the default kind
    check_fusion_keys(synth_config("HetCompEnsemble"))  # our yaml sets every parameter: not the user's


def test_a_fusion_key_scoped_to_the_student_is_one_line(synth_config):
    """The student learns the run's fusion: ``--HetComp.ensemble_tau=30`` would make it learn another one than its row
    names."""
    from recbole_hetcomp.run.fusion import check_fusion_keys

    base = synth_config("HetCompEnsemble")
    check_fusion_keys(base, synth_config("HetComp"))
    with pytest.raises(ValueError, match=r"^HetComp.ensemble_tau=30.0: the ensemble is the run's, not the student's "
                                         r"\(its row, every student and every --tune trial learn one fusion\): set "
                                         r"ensemble_tau without the HetComp. scope$"):
        check_fusion_keys(base, synth_config("HetComp", cmd_args=["--ensemble_tau=30.0"]))
    with pytest.raises(ValueError, match=r"^HetComp.teacher_weights="):
        check_fusion_keys(base, synth_config("HetComp", teacher_weights={"BPR": 2.0}))
