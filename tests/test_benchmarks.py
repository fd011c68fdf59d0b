"""The benchmarks' own logic: accuracy.py's records (ablation rows added to a recorded run, one at a
time), loss_weights.py's reading of Adam's state and student_variants.py's runs and table."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from recbole_hetcomp.run.pipeline import run_pipeline
from recbole_hetcomp.trainer.base import load_checkpoint

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SMALL = {"epochs": 5, "trajectory_top_n": 50, "hetcomp_k": 20, "hetcomp_p": 5, "dkc_k": 10,
         "show_progress": False, "state": "ERROR"}
STUDENT_ARGS = ["--HetComp.epochs=25", "--HetComp.eval_step=5"]
TEACHERS = ["BPR", "EASE"]
SEED = 2020


def benchmark(name):
    """The module of benchmarks/<name>.py (importable with benchmarks/ on the path only while it loads)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def accuracy(synth_shared, tmp_path_factory):
    """benchmarks/accuracy.py with its runs, records and settings pointed at the synthetic data."""
    module = benchmark("accuracy")
    data_path, name = synth_shared
    root = tmp_path_factory.mktemp("bench")
    saved = module.RUNS, module.RECORDS, module.pipeline_settings
    module.RUNS, module.RECORDS = root / ".runs", root / "records"

    def settings(dataset, seed, citeulike):
        return TEACHERS, {**SMALL, "seed": seed, "data_path": str(data_path),
                          "trajectory_store": str(module.RUNS / dataset / "trajectories")}, list(STUDENT_ARGS)

    module.pipeline_settings = settings
    yield module, name
    module.RUNS, module.RECORDS, module.pipeline_settings = saved


@pytest.fixture(scope="module")
def added(accuracy, fresh_dir, tmp_path_factory):
    """A run without ablations, recorded, then its ablations added; and the same run with them."""
    module, name = accuracy
    with fresh_dir("accuracy"):
        module.run_one(name, SEED, None, ablations=False)
        module.record_run(module.run_dir(name, SEED), name, SEED)
        module.add_ablations(name, SEED, None)
        _, cfg, _ = module.pipeline_settings(name, SEED, None)
        whole, _ = run_pipeline(name, teachers=TEACHERS, config_dict=cfg, cmd_args=STUDENT_ARGS,
                                output=tmp_path_factory.mktemp("whole") / "r", ablations=True)
    path = module.RECORDS / name / f"seed-{SEED}.json"
    return module, name, path, whole


def test_added_ablations_equal_the_pipelines_own(added):
    _, _, path, whole = added
    rows = json.loads(path.read_text())["rows"]
    got = {r["name"]: r["test"] for r in rows if r["kind"] == "ablation"}
    want = {r["name"]: r["test"] for r in whole if r["kind"] == "ablation"}
    assert set(got) == {"HetComp w/o DKC (ensemble KD)", "HetComp w/o AKT"}
    assert got == want
    assert all(r["added"].count(",") >= 1 for r in rows if r["kind"] == "ablation")
    assert not any("added" in r for r in rows if r["kind"] != "ablation")


def test_recording_the_run_again_keeps_the_added_rows(added):
    module, name, path, _ = added
    before = json.loads(path.read_text())["rows"]
    module.record_run(module.run_dir(name, SEED), name, SEED)
    after = json.loads(path.read_text())["rows"]
    assert [r["name"] for r in after] == [r["name"] for r in before]


def test_aggregate_orders_rows_by_kind(added):
    module, name, _, _ = added
    result = module.aggregate(name)
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds == ["teacher", "teacher", "ensemble", "ensemble", "student", "ablation", "ablation", "baseline"]
    assert [r["name"] for r in result["rows"][2:4]] == ["Ensemble (equal weights)", "Ensemble (fitted on validation)"]
    targets = result["targets"]  # the student is measured against the ensemble it learns: the fitted one
    assert targets["student_learns"] == "Ensemble (fitted on validation)" and "fitted_vs_best_teacher" in targets


def test_old_records_name_their_ensemble_equal_weights(accuracy):
    module, _ = accuracy
    assert module.row_key({"kind": "ensemble", "name": "Ensemble(BPR+EASE)"}) == "Ensemble (equal weights)"
    # a student of the equal-weight ensemble is another row than one of the fitted ensemble
    assert module.row_key({"kind": "student", "name": "HetComp"}) == "HetComp (learns equal weights)"
    assert module.row_key({"kind": "student", "name": "HetComp", "ensemble": "fitted on validation"}) == "HetComp"
    assert module.row_key({"kind": "ensemble", "name": "Ensemble (fitted on validation)"}) == \
        "Ensemble (fitted on validation)"


def test_nothing_is_trained_when_no_row_is_missing(added, monkeypatch):
    module, name, path, _ = added
    monkeypatch.setattr("recbole_hetcomp.run.pipeline.build_teachers", lambda *a, **k: pytest.fail("trained"))
    before = path.read_bytes()
    module.add_ablations(name, SEED, None)
    assert path.read_bytes() == before


def _trained_kd_methods(monkeypatch):
    """Stands in for the student's training; returns the list of the kd_method values it was asked to train."""
    trained = []

    def student(dataset, trajectories, workdir, output, config, args, fusion=None):
        trained.append(config["kd_method"])
        return {"name": "", "kind": "", "test": {}}, None

    monkeypatch.setattr("recbole_hetcomp.run.pipeline.train_student", student)
    return trained


def test_kd_methods_name_the_pipelines_baselines_and_train_only_those(added, monkeypatch):
    from recbole_hetcomp.run.pipeline import KD_BASELINES

    module, name, path, _ = added
    assert {over["kd_method"] for _, over in KD_BASELINES} == {"rd", "rrd", "dcd", "cldrd"}
    trained = _trained_kd_methods(monkeypatch)
    module.add_ablations(name, SEED, None, kind="kd baseline", methods=["cldrd"])
    assert trained == ["cldrd"]
    row = json.loads(path.read_text())["rows"][-1]
    assert row["name"] == "CL-DRD (KD of the ensemble)" and row["recbole_hetcomp"] == module.__version__


def test_kd_methods_can_name_our_readings_by_their_row_names(added, monkeypatch):
    module, name, path, _ = added
    trained = _trained_kd_methods(monkeypatch)
    module.add_ablations(name, SEED, None, kind="kd baseline", methods=["cldrd_group", "rd", "dcd_overview"])
    assert trained == ["rd", "dcd_overview", "cldrd_group"]  # the baselines first, then the readings
    names = [r["name"] for r in json.loads(path.read_text())["rows"][-3:]]
    assert names == ["RD (KD of the ensemble)", "DCD, overview reading (KD of the ensemble)",
                     "CL-DRD, group reading (KD of the ensemble)"]
    assert all(r["kind"] == "kd baseline" for r in json.loads(path.read_text())["rows"][-3:])


def test_ablations_of_the_other_ensemble_do_not_count_as_present(added, tmp_path, monkeypatch):
    """A record re-run under the fitted ensemble keeps its ablation rows of the equal-weight one (added before):
    those are other rows, so the fitted ensemble's ablations are still missing and get trained."""
    module, name, path, _ = added

    def equal_weight_ablations(record):
        for r in record["rows"]:
            if r["kind"] == "ablation":
                r.pop("ensemble", None)

    other, _ = _other_records(module, name, path, tmp_path, monkeypatch, equal_weight_ablations)
    trained = []

    def student(dataset, trajectories, workdir, output, config, args, fusion=None):
        trained.append((config.get("dkc", True), config.get("akt", True), fusion.label))
        return {"name": "", "kind": "", "test": {}, "ensemble": fusion.label}, None

    monkeypatch.setattr("recbole_hetcomp.run.pipeline.train_student", student)
    module.add_ablations(name, SEED, None)
    assert trained == [(False, True, "fitted on validation"), (True, False, "fitted on validation")]
    keys = [module.row_key(r) for r in json.loads(other.read_text())["rows"] if r["kind"] == "ablation"]
    assert keys == ["HetComp w/o DKC (ensemble KD) (learns equal weights)", "HetComp w/o AKT (learns equal weights)",
                    "HetComp w/o DKC (ensemble KD)", "HetComp w/o AKT"]


def _other_records(module, name, path, tmp_path, monkeypatch, edit):
    """A copy of the record, changed by ``edit(record)``, as the only record the module sees."""
    record = json.loads(path.read_text())
    edit(record)
    other = tmp_path / "records"
    (other / name).mkdir(parents=True)
    (other / name / path.name).write_text(json.dumps(record))
    monkeypatch.setattr(module, "RECORDS", other)
    return other / name / path.name, record


def _bpr_elsewhere(record):
    record["rows"][0]["test"]["recall@20"] += 0.01  # BPR, as if trained on another CPU


def test_teachers_that_differ_from_the_record_are_refused(added, tmp_path, monkeypatch):
    module, name, path, _ = added

    def edit(record):
        record["rows"] = [r for r in record["rows"] if r["kind"] != "ablation"]
        _bpr_elsewhere(record)

    copy, record = _other_records(module, name, path, tmp_path, monkeypatch, edit)
    with pytest.raises(SystemExit, match="teacher BPR now tests .* rerun the whole seed instead"):
        module.add_ablations(name, SEED, None)
    assert json.loads(copy.read_text()) == record  # nothing written


def _rows(tests, fusion_weights=None, kind="exp", param=50.0):
    """Hand-built record rows: teachers with these Recall@20s, and a fitted ensemble of these weights (or none)."""
    rows = [{"name": t, "kind": "teacher", "test": {"recall@20": r}} for t, r in tests.items()]
    if fusion_weights is not None:
        rows.append({"name": "Ensemble (fitted on validation)", "kind": "ensemble",
                     "fusion": {"kind": kind, "param": param, "weights": fusion_weights, "text": "t"}})
    return rows


def test_only_the_fusion_and_its_teachers_of_weight_above_0_make_the_target(accuracy):
    module, _ = accuracy
    weights = {"BPR": 0.0, "CML": 1.0, "EASE": 2.0}
    ref = _rows({"BPR": 0.1, "CML": 0.2, "EASE": 0.3}, weights)
    assert module.distilled(ref) == {"CML": {"recall@20": 0.2}, "EASE": {"recall@20": 0.3},
                                     "fusion": {"kind": "exp", "param": 50.0, "weights": weights}}
    unused = _rows({"BPR": 0.15, "CML": 0.2, "EASE": 0.3}, weights)  # BPR, of weight 0, trained elsewhere
    assert module.target_differs(unused, ref) == [] and module.unused_differ(unused, ref) == ["BPR"]
    used = _rows({"BPR": 0.1, "CML": 0.25, "EASE": 0.3}, weights)
    assert module.target_differs(used, ref) == ["CML"] and module.unused_differ(used, ref) == []
    assert module.target_differs(_rows({"BPR": 0.1, "CML": 0.2, "EASE": 0.3}, weights, param=30.0), ref) == ["fusion"]
    # the other fusion gives BPR weight: now its metrics count, and so does the fusion
    assert module.target_differs(_rows({"BPR": 0.15, "CML": 0.2, "EASE": 0.3}, {**weights, "BPR": 1.0}), ref) == [
        "BPR", "fusion"]
    # ... but a teacher that tests the same is not named for being weighed in one fusion only
    assert module.target_differs(_rows({"BPR": 0.1, "CML": 0.2, "EASE": 0.3}, {**weights, "BPR": 1.0}), ref) == [
        "fusion"]
    # an integer parameter or weight is the same fusion as its float
    assert module.target_differs(_rows({"BPR": 0.1, "CML": 0.2, "EASE": 0.3}, {"BPR": 0, "CML": 1, "EASE": 2},
                                       param=50), ref) == []
    # a record from before the fit (no fusion in its ensemble row): every teacher counts
    old = _rows({"BPR": 0.1, "CML": 0.2, "EASE": 0.3})
    assert module.target_differs(_rows({"BPR": 0.15, "CML": 0.2, "EASE": 0.3}), old) == ["BPR"]


def _fit_without_bpr(module, monkeypatch, record_param=None):
    """choose_fusion stands in a fit that gives BPR weight 0; returns an edit that makes the record's fitted ensemble
    that fusion (or, with ``record_param``, another tau), with BPR trained to other metrics and no ablation rows."""
    from recbole_hetcomp.distill.fit import Fusion
    from recbole_hetcomp.run.fusion import RunFusion

    fusion = Fusion(teachers=list(TEACHERS), kind="exp", param=50.0, weights=[0.0, 1.0])
    monkeypatch.setattr("recbole_hetcomp.run.fusion.choose_fusion", lambda *a, **k: RunFusion(fusion, True))

    def edit(record):
        record["rows"] = [r for r in record["rows"] if r["kind"] != "ablation"]
        _bpr_elsewhere(record)
        fitted = next(r for r in record["rows"] if r["name"] == "Ensemble (fitted on validation)")
        fitted["fusion"] = {"kind": "exp", "param": record_param or 50.0, "weights": {"BPR": 0.0, "EASE": 1.0},
                            "text": "t"}
    return edit


def test_a_teacher_of_weight_0_may_differ_from_the_record_and_the_added_rows_say_so(added, tmp_path, monkeypatch,
                                                                                   capsys):
    module, name, path, _ = added
    copy, _ = _other_records(module, name, path, tmp_path, monkeypatch, _fit_without_bpr(module, monkeypatch))
    trained = _trained_kd_methods(monkeypatch)
    module.add_ablations(name, SEED, None, kind="kd baseline", methods=["rrd"])
    assert trained == ["rrd"]
    row = json.loads(copy.read_text())["rows"][-1]
    assert row["name"] == "RRD (KD of the ensemble)" and row["unused_teachers_differ"] == ["BPR"]
    assert "BPR now test(s) otherwise than the record says, but weigh 0" in capsys.readouterr().out
    assert (f"Seed {SEED}: RRD (KD of the ensemble) trained beside BPR retrained to other test metrics than this "
            f"record's, of weight 0 in the fit") in module.markdown(module.aggregate(name))


def test_another_fusion_than_the_records_is_refused(added, tmp_path, monkeypatch):
    module, name, path, _ = added
    copy, record = _other_records(module, name, path, tmp_path, monkeypatch,
                                  _fit_without_bpr(module, monkeypatch, record_param=30.0))
    _trained_kd_methods(monkeypatch)
    with pytest.raises(SystemExit, match=r"the ensemble is now fitted as exp tau=50; weights BPR 0, EASE 1, the "
                                         r"record's student learnt another fusion"):
        module.add_ablations(name, SEED, None, kind="kd baseline", methods=["rrd"])
    assert json.loads(copy.read_text()) == record  # nothing written


def test_a_rerun_on_other_teachers_drops_the_rows_added_on_the_old_ones(added, tmp_path, monkeypatch, capsys):
    module, name, path, _ = added
    copy, _ = _other_records(module, name, path, tmp_path, monkeypatch, _bpr_elsewhere)
    module.record_run(module.run_dir(name, SEED), name, SEED)
    assert [r["kind"] for r in json.loads(copy.read_text())["rows"]] == [
        "teacher", "teacher", "ensemble", "ensemble", "student", "baseline"]
    assert "dropping the rows added on the old ones: HetComp w/o DKC (ensemble KD), HetComp w/o AKT" in \
        capsys.readouterr().out


def _run_copy(module, name, tmp_path, edit):
    """A copy of the recorded run's folder (results.json, run.json) with its rows changed by ``edit(rows)``."""
    run = tmp_path / "run"
    run.mkdir()
    source = module.run_dir(name, SEED)
    results = json.loads((source / "results.json").read_text())
    edit(results["rows"])
    (run / "results.json").write_text(json.dumps(results))
    (run / "run.json").write_text((source / "run.json").read_text())
    return run


def _without_bpr(rows, param=50.0):
    fitted = next(r for r in rows if r["name"] == "Ensemble (fitted on validation)")
    fitted["fusion"] = {"kind": "exp", "param": param, "weights": {"BPR": 0.0, "EASE": 1.0}, "text": "t"}


def test_a_rerun_keeps_the_added_rows_where_only_a_teacher_of_weight_0_differs(added, tmp_path, monkeypatch, capsys):
    module, name, path, _ = added
    copy, _ = _other_records(module, name, path, tmp_path, monkeypatch, lambda record: _without_bpr(record["rows"]))

    def elsewhere(rows):
        _without_bpr(rows)
        rows[0]["test"]["recall@20"] += 0.01  # BPR, of weight 0 in the fit, trained on another CPU

    module.record_run(_run_copy(module, name, tmp_path, elsewhere), name, SEED)
    rows = json.loads(copy.read_text())["rows"]
    kept = [r for r in rows if r["kind"] == "ablation"]
    assert [r["name"] for r in kept] == ["HetComp w/o DKC (ensemble KD)", "HetComp w/o AKT"]
    assert all(r["unused_teachers_differ"] == ["BPR"] for r in kept)
    assert "HetComp w/o" not in capsys.readouterr().out  # (rows of equal weights, where BPR counts, may be dropped)


def test_a_rerun_under_another_fusion_drops_the_added_rows(added, tmp_path, monkeypatch, capsys):
    module, name, path, _ = added
    copy, _ = _other_records(module, name, path, tmp_path, monkeypatch, lambda record: _without_bpr(record["rows"]))
    module.record_run(_run_copy(module, name, tmp_path, lambda rows: _without_bpr(rows, param=30.0)), name, SEED)
    assert not [r for r in json.loads(copy.read_text())["rows"] if r["kind"] == "ablation"]
    assert "differ from the record's; dropping the rows added on the old ones: HetComp w/o DKC" in \
        capsys.readouterr().out


@pytest.mark.parametrize("with_fusion", [True, False])
def test_a_rerun_under_the_fit_keeps_the_rows_added_on_equal_weights_of_the_same_teachers(added, tmp_path,
                                                                                           monkeypatch, with_fusion):
    """Ablation rows added to a record from before the fit (its students learnt equal weights; its ensemble row
    with or, older, without its fusion) are kept by a re-run under the fit on the very same teachers: they are rows
    of the other ensemble, whose target has not changed."""
    module, name, path, _ = added

    def old_record(record):
        record["rows"] = [r for r in record["rows"] if r["name"] != "Ensemble (fitted on validation)"]
        for r in record["rows"]:
            if r["kind"] in ("student", "ablation"):
                r.pop("ensemble", None)
            if r["name"] == "Ensemble (equal weights)" and not with_fusion:
                r.pop("fusion")

    copy, _ = _other_records(module, name, path, tmp_path, monkeypatch, old_record)
    module.record_run(module.run_dir(name, SEED), name, SEED)
    keys = [module.row_key(r) for r in json.loads(copy.read_text())["rows"] if r["kind"] == "ablation"]
    assert keys == ["HetComp w/o DKC (ensemble KD) (learns equal weights)", "HetComp w/o AKT (learns equal weights)"]


def test_a_seed_without_a_record_is_an_error(accuracy):
    module, name = accuracy
    with pytest.raises(SystemExit, match=r"no recorded run of synth seed 1 \(.*seed-1.json\): run it first"):
        module.add_ablations(name, 1, None)


def test_a_row_of_some_seeds_only_says_which_and_has_no_std(accuracy, tmp_path, monkeypatch):
    module, _ = accuracy

    def row(name, kind, recall):
        learnt = {"ensemble": "fitted on validation"} if kind in ("student", "ablation") else {}
        return {"name": name, "kind": kind, "params": 10, "test": {"recall@20": recall}, **learnt}

    records = tmp_path / "records" / "hand"
    records.mkdir(parents=True)
    for seed, rows in {1: [row("BPR", "teacher", 0.25), row("HetComp", "student", 0.5)],
                       2: [row("BPR", "teacher", 0.75), row("HetComp", "student", 0.5),
                           row("HetComp w/o AKT", "ablation", 0.375)]}.items():
        record = {"seed": seed, "date": "d", "machine": "m", "rows": rows}
        (records / f"seed-{seed}.json").write_text(json.dumps(record))
    monkeypatch.setattr(module, "RECORDS", tmp_path / "records")
    result = module.aggregate("hand")
    stats = {r["name"]: (r["seeds"], r["test"]["recall@20"]) for r in result["rows"]}
    assert stats["BPR"] == ([1, 2], {"mean": 0.5, "std": pytest.approx(0.125 ** 0.5), "n": 2,
                                     "values": [0.25, 0.75]})
    assert stats["HetComp w/o AKT"] == ([2], {"mean": 0.375, "std": None, "n": 1, "values": [0.375]})
    lines = module.markdown(result).splitlines()
    assert "| BPR | teacher | 10 | - | 0.5000 ± 0.3536 |" in lines[6]
    assert "| HetComp w/o AKT (seed 2 only) | ablation | 10 | - | 0.3750 |" in lines[8]


def test_the_kd_comparison_names_the_winner_on_hetcomps_seeds_and_sets_a_later_method_apart(accuracy):
    module, _ = accuracy

    def row(name, kind, values):
        seeds = sorted(values)
        return {"name": name, "kind": kind, "seeds": seeds, "test": {"recall@20": {"values": [values[s] for s in seeds]}}}

    table = [row("EASE", "teacher", {1: 0.9, 2: 0.9, 3: 0.9}),
             row("HetComp", "student", {1: 0.50, 2: 0.60, 3: 0.70}),
             row("RRD (KD of the ensemble)", "kd baseline", {1: 0.55, 2: 0.625, 3: 0.75}),
             row("DCD (KD of the ensemble)", "kd baseline", {3: 0.99}),
             row("RD (KD of the ensemble)", "kd baseline", {1: 0.25, 2: 0.25, 3: 0.25}),
             row("MF w/o KD (BPR, d=6)", "baseline", {1: 0.125, 2: 0.125, 3: 0.125})]
    kd = module.kd_comparison(table)
    assert kd["seeds"] == [1, 2, 3]  # DCD has seed 3 only: its 0.99 must not enter the three-seed comparison
    assert [(r["name"], r["mean"]) for r in kd["methods"]] == [
        ("RRD (KD of the ensemble)", pytest.approx(0.641666, abs=1e-6)), ("HetComp", pytest.approx(0.6)),
        ("RD (KD of the ensemble)", 0.25), ("MF w/o KD (BPR, d=6)", 0.125)]
    assert kd["winner"] == "RRD (KD of the ensemble)" and kd["runner_up"] == "HetComp"
    # the larger std is RRD's: sqrt(((0.55 - m)^2 + (0.625 - m)^2 + (0.75 - m)^2) / 2), m = 0.641666...
    assert kd["lead"] == pytest.approx(0.041666, abs=1e-6) and kd["spread"] == pytest.approx(0.1010363, abs=1e-7)
    assert kd["lead_exceeds_spread"] is False
    # paired: RRD leads by 0.05, 0.025 and 0.05
    assert kd["seed_leads"] == [pytest.approx(0.05), pytest.approx(0.025), pytest.approx(0.05)]
    assert kd["ahead_in"] == 3
    # DCD is set against HetComp on its own seed: HetComp 0.70 against 0.99, behind by 0.29
    assert kd["partial"] == [{"name": "DCD (KD of the ensemble)", "seeds": [3], "mean": 0.99,
                              "hetcomp_mean": pytest.approx(0.7), "hetcomp_leads": [pytest.approx(-0.29)],
                              "hetcomp_ahead_in": 0}]
    lines = module.markdown({"dataset": "hand", "seeds": [1, 2, 3], "rows": [], "targets": {},
                             "kd_comparison": kd}).splitlines()
    assert ("DCD (KD of the ensemble), recorded on seed 3 only: 0.9900 against HetComp's 0.7000 on the same seed 3; "
            "HetComp ahead in 0 of 1 (3: -0.2900).") in lines
    assert module.kd_comparison(table[:2]) is None  # no KD baseline: nothing to compare
    # means equal to the 4 decimals shown: no winner is named, whichever row sorts first
    tie = module.kd_comparison([row("HetComp", "student", {1: 0.1832, 2: 0.1779}),
                                row("RRD (KD of the ensemble)", "kd baseline", {1: 0.1825, 2: 0.1786})])
    assert tie["lead"] == pytest.approx(0.0, abs=1e-12)
    text = "\n".join(module.kd_markdown(tie, "hand"))
    assert "Winner" not in text
    assert "No winner: HetComp and RRD (KD of the ensemble) tie at 0.1805 (std 0.0037)." in text


@pytest.fixture
def loss_weights():
    return benchmark("loss_weights")


def _student_checkpoint(epoch=7):
    """Adam's state after one step with beta2 = 0.5: v-hat = v / 0.5 = 0.01, RMS 0.1 everywhere;
    row 0 (padding) is far off, so counting it would change every figure."""
    import torch

    users = torch.tensor([[9.0, 9.0], [0.5, -2.0], [3.0, 4.0]])
    items = torch.tensor([[9.0, 9.0], [0.5, -0.5]])
    state = {i: {"step": torch.tensor(1.0), "exp_avg_sq": torch.full_like(t, 0.005)}
             for i, t in enumerate((users, items))}
    return {"config": {"seed": 3, "embedding_size": 2, "overall_loss_weight": 0.01, "rank_loss_weight": 0.005},
            "epoch": epoch, "state_dict": {"user_embedding.weight": users, "item_embedding.weight": items},
            "optimizer": {"state": state, "param_groups": [
                {"lr": 0.001, "betas": (0.9, 0.5), "eps": 1e-8, "weight_decay": 0.1, "params": [0, 1]}]}}


def test_weight_decay_pull_from_adam_state_leaves_out_the_padding_row(loss_weights):
    pulls = loss_weights.decay_pull(_student_checkpoint())
    users, items = pulls["users"], pulls["items"]  # decay |theta| = 0.1 |theta|, over RMS 0.1: |theta|
    assert users["entries"] == 4 and items["entries"] == 2
    assert users["median_pull"] == pytest.approx(2.5) and users["p90_pull"] == pytest.approx(3.7)
    assert users["pull_above_1"] == pytest.approx(0.75) and users["median_abs_theta"] == pytest.approx(2.5)
    assert items["median_pull"] == pytest.approx(0.5) and items["pull_above_1"] == 0.0
    assert users["median_rms_grad"] == pytest.approx(0.1) and users["min_rms_over_eps"] == pytest.approx(1e7)


def test_a_student_row_says_which_loss_ran_at_its_best_epoch(loss_weights, tmp_path):
    import torch

    run = tmp_path / "ds" / "seed-3"
    run.mkdir(parents=True)
    torch.save(_student_checkpoint(epoch=7), run / "HetComp.pth")
    row = loss_weights.student_row(run / "HetComp.pth")
    assert (row["run"], row["seed"], row["best_epoch"], row["steps"]) == ("ds/seed-3", 3, 7, 1)
    assert row["loss_at_best_epoch"] is None  # no results.json beside it
    for switch, loss in ((5, "rank"), (7, "rank"), (8, "overall")):
        (run / "results.json").write_text(json.dumps({"rows": [
            {"name": "HetComp", "curriculum": {"loss_switch_epoch": switch}}]}))
        assert loss_weights.student_row(run / "HetComp.pth")["loss_at_best_epoch"] == loss


def test_a_checkpoint_without_matching_adam_state_is_refused(loss_weights):
    import torch

    ckpt = _student_checkpoint()
    del ckpt["optimizer"]["state"][0]["exp_avg_sq"]
    with pytest.raises(SystemExit, match="user_embedding.weight: no Adam state"):
        loss_weights.decay_pull(ckpt)
    ckpt = _student_checkpoint()
    ckpt["optimizer"]["state"][0]["exp_avg_sq"] = torch.ones(2, 2)
    with pytest.raises(SystemExit, match="not in the optimizer's order"):
        loss_weights.decay_pull(ckpt)


def test_loss_weights_without_stored_students_says_what_to_run(loss_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(loss_weights, "RUNS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["loss_weights.py"])
    with pytest.raises(SystemExit, match="no stored student .* run benchmarks/accuracy.py"):
        loss_weights.main()


def test_a_teachers_keys_go_to_a_yaml_when_the_student_is_of_its_model(tmp_path, synth_config):
    """student=LightGCN beside a LightGCN teacher with its own eval_step (CiteULike-t): the teacher's key moves to a
    yaml line that reaches the teacher only; another student leaves the arguments as they are."""
    accuracy = benchmark("accuracy")
    scoped = ["--BPR.eval_step=5", "--LightGCN.eval_step=5"]
    assert accuracy.teacher_lines_as_yaml(scoped, None, tmp_path) == (scoped, None)
    assert accuracy.teacher_lines_as_yaml(scoped, "MF", tmp_path) == (scoped, None)
    rest, files = accuracy.teacher_lines_as_yaml(scoped, "lightgcn", tmp_path / "out")
    assert rest == ["--BPR.eval_step=5"] and files == [str(tmp_path / "out" / "teacher_keys.yaml")]
    assert (tmp_path / "out" / "teacher_keys.yaml").read_text() == "LightGCN.eval_step: 5\n"
    assert synth_config("LightGCN", config_files=files)["eval_step"] == 5
    plain = synth_config("HetComp", student="LightGCN")["eval_step"]
    assert plain != 5 and synth_config("HetComp", config_files=files, student="LightGCN")["eval_step"] == plain


@pytest.fixture
def variants(added, tmp_path, monkeypatch):
    """benchmarks/student_variants.py on the records of ``added`` (its accuracy run is the defaults line)."""
    module, name, _, _ = added
    variants = benchmark("student_variants")
    for attr, value in (("RUNS", module.RUNS), ("RECORDS", module.RECORDS), ("RESULTS", tmp_path)):
        monkeypatch.setattr(variants, attr, value)
    return variants, name


def test_a_variant_is_key_value_pairs_and_a_bad_one_is_named(variants):
    module, _ = variants
    assert module.parse_variant("weight_decay=0,embedding_size=8") == {"weight_decay": "0", "embedding_size": "8"}
    assert module.variant_name({"weight_decay": "0", "embedding_size": "8"}) == "embedding_size-8,weight_decay-0"
    assert module.variant_name({"a": "b_c-d"}) != module.variant_name({"a": "b", "c": "d"})
    for bad in ("embedding_size", "a=[1,2]", "x=1/2", "=3"):
        with pytest.raises(SystemExit, match="is not KEY=VALUE"):
            module.parse_variant(bad)
    with pytest.raises(SystemExit, match="'a' twice"):
        module.parse_variant("a=1,a=2")


def test_variants_change_the_student_only_and_sit_beside_the_accuracy_run(variants, fresh_dir):
    module, name = variants
    with fresh_dir("variants"):
        module.main(["--dataset", name, "--seeds", str(SEED), "--variant", "embedding_size=8",
                     "--variant", "weight_decay=0.5"])
    record = module.variant_record(name, SEED, {"weight_decay": "0.5"})
    assert json.loads(record.read_text())["settings"] == {"weight_decay": "0.5"}
    student = load_checkpoint(module.variant_dir(name, SEED, {"weight_decay": "0.5"}) / "HetComp.pth", "cpu")
    assert student["config"]["weight_decay"] == student["optimizer"]["param_groups"][0]["weight_decay"] == 0.5
    lines = json.loads((module.RESULTS / "student_variants.json").read_text())["results"][name]
    assert [x["settings"] for x in lines] == [{}, {"embedding_size": "8"}, {"weight_decay": "0.5"}]
    default, wide, decayed = lines
    assert wide["params"] == default["params"] // 6 * 8  # (users + items) x d
    assert wide["mf_name"].endswith("d=8)") and decayed["mf"] == default["mf"]  # MF follows the size only
    assert decayed["ensemble"] == default["ensemble"] == wide["ensemble"]  # the same teachers
    teachers = [[r["test"] for r in json.loads(p.read_text())["rows"] if r["kind"] == "teacher"]
                for p in (record, module.variant_record(name, SEED, {"embedding_size": "8"}))]
    assert teachers[0] == teachers[1] and len(teachers[0]) == len(TEACHERS)
    assert decayed["student"] != default["student"]
    assert "| weight_decay=0.5 |" in (module.RESULTS / "student_variants.md").read_text()
    assert decayed["teachers_differ"] == []
    assert "| the accuracy run's |" in (module.RESULTS / "student_variants.md").read_text()
    summary = {json.dumps(x["settings"]): x for x in
               json.loads((module.RESULTS / "student_variants.json").read_text())["summary"][name]}
    assert summary['{"weight_decay": "0.5"}']["over_default"] == pytest.approx(
        decayed["student"]["recall@20"] / default["student"]["recall@20"])
    # Teachers retrained elsewhere (another CPU) differ: the line says which, and its ratio to the default student
    # (trained on other teachers) leaves the summary.
    original = record.read_text()
    rec = json.loads(original)
    teacher = next(r for r in rec["rows"] if r["kind"] == "teacher")
    teacher["test"]["recall@20"] += 0.01
    record.write_text(json.dumps(rec))
    try:
        module.main(["--dataset", name, "--only-aggregate"])
    finally:
        record.write_text(original)  # the records are the module's fixture: leave them as found
    result = json.loads((module.RESULTS / "student_variants.json").read_text())
    assert result["results"][name][2]["teachers_differ"] == [teacher["name"]]
    summary = {json.dumps(x["settings"]): x for x in result["summary"][name]}
    assert summary['{"weight_decay": "0.5"}']["over_default"] is None
    assert summary['{"embedding_size": "8"}']["over_default_seeds"] == [SEED]
    assert f"differ from the accuracy run's: {teacher['name']}" in (module.RESULTS / "student_variants.md").read_text()


def test_scale_lists_are_distinct_skewed_and_never_the_padding_item():
    """benchmarks/scale.py's synthetic teacher lists: n distinct items a row, no item 0, popular items first."""
    import torch

    scale = benchmark("scale")
    gen = torch.Generator().manual_seed(0)
    lists = scale.skewed_lists(3000, 100, scale.popularity_logits(2000), gen, chunk=1024)
    assert lists.dtype == torch.int32 and lists.shape == (3000, 100)
    assert bool((lists > 0).all()) and all(row.unique().numel() == 100 for row in lists)
    seen = torch.bincount(lists.view(-1).long(), minlength=2000)
    assert seen[1:11].sum() > 20 * seen[-10:].sum()  # the ten most popular items against the ten least
    first = lists[:, 0].float().mean()
    assert first < lists[:, -1].float().mean()  # the ranking follows popularity (ids are popularity ranks)


@pytest.fixture
def fit_records(tmp_path, monkeypatch):
    """benchmarks/ensemble_fit.py writing to tmp_path, with copies of the committed ml-100k records."""
    module = benchmark("ensemble_fit")
    records = tmp_path / "ensemble_fit"
    records.mkdir()
    for path in sorted((BENCHMARKS / "results" / "ensemble_fit").glob("ml-100k-seed-*.json")):
        (records / path.name).write_text(path.read_text())
    monkeypatch.setattr(module, "RECORDS", records)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module, records


def test_ensemble_fit_names_the_seeds_below_the_best_teacher(fit_records, tmp_path):
    # the floor is per seed: a mean above 1.00x with one seed under it is "not met", and names that seed
    module, records = fit_records

    def target_line():
        module.aggregate()
        return next(line for line in (tmp_path / "ensemble_fit.md").read_text().splitlines()
                    if line.startswith("Targets"))

    rec = json.loads((records / "ml-100k-seed-2021.json").read_text())
    best = rec["teachers"][rec["best_teacher"]]["test"]["recall@20"]
    rec["methods"]["greedy"]["test"]["recall@20"] = best * 0.99
    (records / "ml-100k-seed-2021.json").write_text(json.dumps(rec))
    assert target_line().endswith(">= 1.00 in every seed: not met: seed 2021 at 0.990x.")
    rec["methods"]["greedy"]["test"]["recall@20"] = best * 1.01
    (records / "ml-100k-seed-2021.json").write_text(json.dumps(rec))
    assert target_line().endswith(">= 1.00 in every seed: met.")


def test_a_fit_measured_on_some_seeds_is_tabulated_there_beside_the_default(fit_records, tmp_path):
    module, records = fit_records
    for seed in (2020, 2021):  # bagged on seed 2022 only
        other = json.loads((records / f"ml-100k-seed-{seed}.json").read_text())
        other["methods"].pop("bagged", None)
        (records / f"ml-100k-seed-{seed}.json").write_text(json.dumps(other))
    rec = json.loads((records / "ml-100k-seed-2022.json").read_text())
    best = rec["teachers"][rec["best_teacher"]]["test"]["recall@20"]
    greedy = rec["methods"]["greedy"]
    held_best = greedy["held_out"]["best_teacher"]
    rec["methods"]["bagged"] = {**greedy, "fusion": "exp tau=20; weights by hand", "date": "2026-12-06",
                                "machine": "a hand-built machine", "test": {**greedy["test"], "recall@20": best * 1.03},
                                "held_out": {**greedy["held_out"], "fitted": held_best * 1.02}}
    (records / "ml-100k-seed-2022.json").write_text(json.dumps(rec))
    module.aggregate()
    md = (tmp_path / "ensemble_fit.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| fitted, bagged"))
    assert row.startswith(f"| fitted, bagged (seed 2022 only) | {best * 1.03:.4f} | ") and "| 1.030 | " in row
    want = (f"Bagged, on seed 2022 (where it was measured): 1.030x the best single teacher's test Recall@20 against "
            f"the default fit's {greedy['test']['recall@20'] / best:.3f}x on the same seed; held out, 1.020x against "
            f"{greedy['held_out']['fitted'] / held_best:.3f}x.")
    assert want in md.splitlines()
    assert "- seed 2022, bagged: exp tau=20; weights by hand" in md and "a hand-built machine" in md
    assert not any(line.startswith("The same targets, bagged") for line in md.splitlines())  # not a 3-seed mean
    summary = json.loads((tmp_path / "ensemble_fit.json").read_text())["summary"]["ml-100k"]["bagged"]
    assert summary["ratio_per_seed"] == {"2022": pytest.approx(1.03)}  # JSON keys are strings


def test_the_ceiling_scores_each_list_without_the_users_validation_items_against_the_test_items():
    # the evaluator masks validation items when it ranks for test: the ceiling's lists drop them, order kept
    from types import SimpleNamespace

    import torch

    from recbole_hetcomp.distill.fit import prepare

    module = benchmark("ensemble_fit")

    def split(users, items):
        return SimpleNamespace(_dataset=SimpleNamespace(inter_feat={"u": torch.tensor(users), "i": torch.tensor(items)}))

    data = SimpleNamespace(train_dataset=SimpleNamespace(uid_field="u", iid_field="i", user_num=3, item_num=7),
                           valid=split([1, 2], [2, 5]), test=split([2, 1, 2], [4, 3, 1]))
    a = torch.tensor([[-1, -1, -1, -1], [2, 3, 1, -1], [5, 6, 1, 4]], dtype=torch.int32)
    b = torch.tensor([[-1, -1, -1, -1], [3, 2, 6, 4], [1, 4, 5, 2]], dtype=torch.int32)
    trajectories = [SimpleNamespace(teacher=t, top=[torch.zeros_like(x), x]) for t, x in (("A", a), ("B", b))]
    got = module.test_problem(data, trajectories)
    want_lists = torch.tensor([[[-1, -1, -1, -1], [3, 1, -1, -1], [6, 1, 4, -1]],
                               [[-1, -1, -1, -1], [3, 6, 4, -1], [1, 4, 2, -1]]], dtype=torch.int32)
    want = prepare(want_lists, torch.tensor([0, 0, 1, 3]), torch.tensor([3, 1, 4]))
    assert torch.equal(got.ranks, want.ranks) and torch.equal(got.hits, want.hits)
    assert torch.equal(got.n_pos, torch.tensor([1, 2])) and got.n == 4


def test_the_ceiling_is_tabulated_beside_the_default_fit_on_its_seeds(fit_records, tmp_path):
    module, records = fit_records
    for seed in (2021, 2022):  # the ceiling on seed 2020 only
        other = json.loads((records / f"ml-100k-seed-{seed}.json").read_text())
        other.pop("ceiling", None)
        (records / f"ml-100k-seed-{seed}.json").write_text(json.dumps(other))
    rec = json.loads((records / "ml-100k-seed-2020.json").read_text())
    best = rec["teachers"][rec["best_teacher"]]["test"]["recall@20"]
    rec["ceiling"] = {"fusion": "exp tau=20; weights by hand", "test": {"recall@20": best * 1.05, "ndcg@20": 0.25},
                      "valid_recbole": 0.5, "fit_s": 1.5, "date": "2026-12-06", "machine": "m"}
    (records / "ml-100k-seed-2020.json").write_text(json.dumps(rec))
    module.aggregate()
    lines = (tmp_path / "ensemble_fit.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith("| ceiling"))
    assert row.endswith(f"(seed 2020 only) | {best * 1.05:.4f} | 0.2500 | 1.050 | 0.5000 | - | 1.50 | - |")
    greedy = rec["methods"]["greedy"]["test"]["recall@20"] / best
    line = next(line for line in lines if line.startswith("Ceiling, on seed 2020:"))
    assert "reaches 1.050x the best single teacher's test Recall@20" in line and f"{greedy:.3f}x" in line
    assert "- seed 2020, ceiling: exp tau=20; weights by hand" in lines
    summary = json.loads((tmp_path / "ensemble_fit.json").read_text())["summary"]["ml-100k"]["ceiling"]
    assert summary["ratio_per_seed"] == {"2020": pytest.approx(1.05)}


def test_a_note_several_seeds_share_is_printed_once(fit_records, tmp_path):
    module, records = fit_records
    for seed, note in ((2020, "timed beside a job"), (2021, "other"), (2022, "timed beside a job")):
        rec = json.loads((records / f"ml-100k-seed-{seed}.json").read_text())
        rec["note"] = note
        (records / f"ml-100k-seed-{seed}.json").write_text(json.dumps(rec))
    module.aggregate()
    lines = (tmp_path / "ensemble_fit.md").read_text().splitlines()
    assert [line for line in lines if line.startswith("Seed")] == ["Seeds 2020, 2022: timed beside a job.",
                                                                    "Seed 2021: other."]


def test_fits_measured_later_join_a_record_only_on_the_same_teachers():
    module = benchmark("ensemble_fit")
    record = json.loads((BENCHMARKS / "results" / "ensemble_fit" / "ml-100k-seed-2022.json").read_text())
    fresh = {**record, "methods": {}}
    merged = module.merge_into(record, fresh)
    assert merged["methods"] == record["methods"] and merged["methods"] is not record["methods"]
    other = json.loads(json.dumps(fresh))
    other["teachers"]["CML"]["test"]["recall@20"] += 0.001
    with pytest.raises(module.OtherTeachers, match=r"ml-100k seed 2022: the teachers here \(CML\) do not test as"):
        module.merge_into(record, other)


def test_variants_that_differ_in_kd_method_or_an_ablation_only_are_compared_on_the_same_teachers():
    module = benchmark("student_variants")

    def line(seed, settings, recall, teachers="t", mf=0.125):
        return {"seed": seed, "settings": settings, "params": 6, "student": {"recall@20": recall, "ndcg@20": 0.0},
                "ensemble": {"recall@20": 1.0}, "best_teacher": "EASE", "best_teacher_recall@20": 1.0,
                "mf": {"recall@20": mf}, "mf_name": "MF w/o KD (BPR, d=6)", "teachers_id": teachers,
                "teachers_differ": [], "machine": "m", "date": "d", "recbole_hetcomp": "v"}

    users = {"hetcomp_batch": "users"}
    lines = [line(1, {}, 0.50), line(2, {}, 0.60),  # the defaults: no other method, no comparison
             line(1, users, 0.40), line(2, users, 0.70),
             line(1, {**users, "kd_method": "rrd"}, 0.45), line(2, {**users, "kd_method": "rrd"}, 0.60),
             # DCD's seed 2 ran on other teachers: only its seed 1 is set against HetComp
             line(1, {**users, "kd_method": "dcd"}, 0.30), line(2, {**users, "kd_method": "dcd"}, 0.99, "u"),
             line(1, {**users, "kd_method": "cldrd_group"}, 0.35),
             # an ablation run as a variant is set against HetComp at its other settings too
             line(1, {**users, "dkc": "False"}, 0.51), line(2, {**users, "dkc": "False"}, 0.57),
             line(1, {"akt": "false", "weight_decay": "0"}, 0.2),  # no HetComp at its other settings: left out
             line(1, {"kd_method": "rd", "weight_decay": "0"}, 0.1)]  # no HetComp at its settings: left out
    [kd] = module.kd_comparisons(lines)
    assert kd["settings"] == users and kd["seeds"] == [1, 2]
    assert [(r["name"], r["mean"]) for r in kd["methods"]] == [
        ("HetComp", pytest.approx(0.55)), ("HetComp w/o DKC (ensemble KD)", pytest.approx(0.54)),
        ("RRD (KD of the ensemble)", pytest.approx(0.525)), ("MF w/o KD (BPR, d=6)", 0.125)]
    assert kd["seed_leads"] == [pytest.approx(-0.11), pytest.approx(0.13)] and kd["ahead_in"] == 1
    assert [(r["name"], r["seeds"], r["hetcomp_leads"]) for r in kd["partial"]] == [
        ("CL-DRD, group reading (KD of the ensemble)", [1], [pytest.approx(0.05)]),
        ("DCD (KD of the ensemble)", [1], [pytest.approx(0.10)])]
    text = module.markdown("hand", lines)
    assert "Distillation methods, same student (hetcomp_batch=users), teachers and ensemble" in text
    assert "Winner: HetComp, ahead of HetComp w/o DKC (ensemble KD) by 0.0100" in text


def test_a_method_on_retrained_teachers_is_paired_with_hetcomp_on_the_same_ones():
    module = benchmark("student_variants")

    def line(seed, settings, recall, teachers="t", differ=()):
        return {"seed": seed, "settings": settings, "params": 6, "student": {"recall@20": recall, "ndcg@20": 0.0},
                "ensemble": {"recall@20": 1.0}, "best_teacher": "EASE", "best_teacher_recall@20": 1.0,
                "mf": {"recall@20": 0.125}, "mf_name": "MF w/o KD (BPR, d=16)", "teachers_id": teachers,
                "teachers_differ": list(differ), "machine": "cpu B", "date": "d", "recbole_hetcomp": "v"}

    d16, dcd, rrd = {"embedding_size": "16"}, {"embedding_size": "16", "kd_method": "dcd"}, \
        {"embedding_size": "16", "kd_method": "rrd"}
    lines = [line(1, d16, 0.50), line(2, d16, 0.60), line(3, d16, 0.70),
             line(1, rrd, 0.45), line(2, rrd, 0.55), line(3, rrd, 0.65),
             line(3, dcd, 0.62),  # on the accuracy run's teachers
             line(1, dcd, 0.41, "r1", ["CML"]), line(1, d16, 0.48, "r1", ["CML"]),  # seed 1 retrained, both
             line(2, dcd, 0.52, "r2", ["CML", "fusion"]),  # seed 2 retrained without HetComp there: left out
             line(3, rrd, 0.99, "r3", ["CML"]), line(3, d16, 0.10, "r3", ["CML"])]  # RRD has seed 3 already
    [kd] = module.kd_comparisons(lines)
    # HetComp's own row and RRD's stay on the accuracy run's teachers: the retrained lines change neither
    assert [(r["name"], r["mean"]) for r in kd["methods"]][:2] == [
        ("HetComp", pytest.approx(0.60)), ("RRD (KD of the ensemble)", pytest.approx(0.55))]
    assert kd["partial"] == []  # DCD's seed 3 alone moved into its pairs
    [pair] = kd["retrained"]
    assert pair["name"] == "DCD (KD of the ensemble)" and pair["seeds"] == [1, 3]
    assert pair["values"] == [0.41, 0.62] and pair["hetcomp"] == [0.48, 0.70]  # seed 1: HetComp on "r1"
    assert pair["hetcomp_leads"] == [pytest.approx(0.07), pytest.approx(0.08)] and pair["hetcomp_ahead_in"] == 2
    assert pair["mean"] == pytest.approx(0.515) and pair["retrained"] == {1: {"differ": ["CML"], "machine": "cpu B"}}
    text = module.markdown("hand", lines)
    assert ("DCD (KD of the ensemble) over seeds 1 (teachers retrained: CML differ from the accuracy run's; cpu B), 3: "
            "0.5150 ± 0.1485. Against HetComp on the same teachers, seed by seed: HetComp ahead in 2 of 2 "
            "(1: 0.4800 against 0.4100, +0.0700, 3: 0.7000 against 0.6200, +0.0800).") in text
    # a variant's summary takes one line a seed, the accuracy run's teachers' where there is one
    summary = {json.dumps(x["settings"], sort_keys=True): x for x in module.summary(lines)}
    assert summary[json.dumps(d16, sort_keys=True)]["recall@20"] == pytest.approx(0.60)
    assert summary[json.dumps(d16, sort_keys=True)]["retrained_seeds"] == []
    assert summary[json.dumps(dcd, sort_keys=True)]["seeds"] == [3, 1, 2]
    assert summary[json.dumps(dcd, sort_keys=True)]["retrained_seeds"] == [1, 2]
    assert "| embedding_size=16, kd_method=dcd | 3, 1 (teachers retrained), 2 (teachers retrained) |" in text


def test_a_run_on_retrained_teachers_is_recorded_apart(variants):
    module, name = variants
    rows = json.loads((module.RECORDS / name / f"seed-{SEED}.json").read_text())["rows"]
    plain = module.variant_record(name, SEED, {"embedding_size": "16"})
    assert module.variant_record(name, SEED, {"embedding_size": "16"}, rows) == plain
    other = json.loads(json.dumps(rows))
    teacher = next(r for r in other if r["kind"] == "teacher" and r["name"] in module.distilled(other))
    teacher["test"]["recall@20"] += 0.01
    apart = module.variant_record(name, SEED, {"embedding_size": "16"}, other)
    assert apart.name == f"seed-{SEED}-embedding_size-16-teachers-{module.teachers_id(other)}.json"
    assert apart.parent == plain.parent and module.teachers_id(other) != module.teachers_id(rows)


def _stored(module, name):
    store = module.RUNS / name / "trajectories" / name
    return {p.name: (p / "meta.json").read_bytes() for p in store.iterdir() if p.is_dir() and p.name != "fits"}


def test_teachers_only_stores_those_teachers_and_records_nothing(accuracy, fresh_dir):
    module, name = accuracy
    seed = 2030
    (module.RUNS / name / "trajectories" / name).mkdir(parents=True, exist_ok=True)
    before = _stored(module, name)
    with fresh_dir("teachers-only"):
        module.train_teachers(name, seed, None, ["EASE"])
        first = _stored(module, name)
        new = {k: v for k, v in first.items() if k not in before}
        assert [k.split("-")[0] for k in new] == ["EASE"]
        module.train_teachers(name, seed, None)  # all of them: EASE is re-used, BPR trained
        second = _stored(module, name)
    added = {k: v for k, v in second.items() if k not in first}
    assert [k.split("-")[0] for k in added] == ["BPR"]
    assert all(second[k] == v for k, v in new.items())  # EASE untouched
    assert not module.run_dir(name, seed).exists()
    assert not (module.RECORDS / name / f"seed-{seed}.json").exists()


def test_teachers_only_refuses_a_teacher_the_run_does_not_have_before_training(accuracy, monkeypatch, capsys):
    module, name = accuracy
    monkeypatch.setattr(module, "train_teachers", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(sys, "argv", ["accuracy.py", "--datasets", name, "--teachers-only", "EASE,MultiVAE"])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 2
    assert (f"--teachers-only MultiVAE: not among {name}'s accuracy teachers (BPR, EASE); name some of those"
            in capsys.readouterr().err)


def test_lightgcn_speed_times_recboles_model_and_ours_on_the_same_weights(accuracy, fresh_dir):
    _, name = accuracy
    speed = benchmark("lightgcn_speed")
    with fresh_dir("lightgcn_speed"):
        result = speed.measure(name, repeats=1, train_epochs=2)
    assert result["max_abs_difference"] < 1e-5
    assert result["training"]["epochs"] == 2 and result["training"]["recbole_valid"]
    assert result["training"]["valid_equal"]  # same batches and negatives: the rounding does not reach the metrics
    rows = {row["step"]: row for row in result["rows"]}
    assert list(rows) == ["teacher", "student", "eval"]
    assert rows["teacher"]["per_epoch"] == -(-result["train_interactions"] // result["batch"])
    assert rows["student"]["per_epoch"] == -(-result["users"] // 16)
    for row in rows.values():
        assert row["recbole_ms"] > 0 and row["ours_ms"] > 0
        assert row["speedup"] == pytest.approx(row["recbole_ms"] / row["ours_ms"])
        assert row["ours_epoch_s"] == pytest.approx(row["ours_ms"] * row["per_epoch"] / 1e3)
    text = speed.markdown({"date": "d", "machine": "m", "versions": {"torch": "t"}, "skipped": ["x: missing"],
                           "results": [result]})
    assert "- skipped: x: missing" in text and text.count("| student step (d = 6, 16 users) |") == 1
    assert "Training as a teacher, 2 epochs and one validation" in text
