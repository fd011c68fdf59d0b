"""The pipeline and the command line, end to end on the synthetic data."""

import json

import pytest

from recbole_hetcomp.run.pipeline import run_pipeline

SMALL = {"epochs": 5, "trajectory_top_n": 30, "hetcomp_k": 20, "hetcomp_p": 5, "dkc_k": 10,
         "show_progress": False, "state": "ERROR"}


@pytest.fixture(scope="module")
def two_runs(synth_shared, fresh_dir, tmp_path_factory):
    data_path, name = synth_shared
    out = tmp_path_factory.mktemp("out")
    cfg = {**SMALL, "data_path": str(data_path), "trajectory_store": str(out / "store")}
    with fresh_dir("pipeline"):
        # the students train longer than the teachers (a scoped argument) so that DKC runs
        student_args = ["--HetComp.epochs=25", "--HetComp.eval_step=5"]
        first, _ = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, cmd_args=student_args,
                                output=out / "r1", ablations=True)
        second, table = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, cmd_args=student_args,
                                     output=out / "r2")
    return first, second, table, out


def test_rows_cover_teachers_ensemble_student_ablations_and_baseline(two_runs):
    first, _, _, _ = two_runs
    assert [(r["name"], r["kind"]) for r in first] == [
        ("BPR", "teacher"), ("EASE", "teacher"), ("Ensemble (equal weights)", "ensemble"),
        ("Ensemble (fitted on validation)", "ensemble"),
        ("HetComp", "student"), ("HetComp w/o DKC (ensemble KD)", "ablation"), ("HetComp w/o AKT", "ablation"),
        ("MF w/o KD (BPR, d=6)", "baseline")]
    for row in first:
        assert set(row["test"]) >= {"recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50"}
    student = first[4]
    assert student["params"] == 6 * (61 + 81)  # (users + padding) and (items + padding) embeddings
    assert first[-1]["params"] == student["params"]
    assert first[2]["params"] == first[0]["params"] + first[1]["params"]
    fitted = first[3]  # only the teachers it weighs count
    assert fitted["params"] == sum(r["params"] for r in first[:2] if fitted["fusion"]["weights"][r["name"]] > 0)
    for row in first[4:7]:  # every student learns the fitted ensemble, and says so
        assert row["ensemble"] == "fitted on validation" and row["fusion"] == fitted["fusion"]["text"]
    assert "curriculum" in student and "loss_switch_epoch" in student["curriculum"]
    assert student["epochs"] == 25 and first[0]["milestone_epochs"][-1] <= 4  # scoped: teachers kept epochs=5
    assert [s["epoch"] for s in student["curriculum"]["steps"]] == [10, 20]


def test_second_run_reuses_the_teachers(two_runs):
    first, second, _, _ = two_runs
    assert [r["reused"] for r in second[:2]] == [True, True]
    assert [r["reused"] for r in first[:2]] == [False, False]
    assert second[0]["test"] == first[0]["test"] and second[2]["test"] == first[2]["test"]
    assert not first[3]["fit"]["reused"] and second[3]["fit"]["reused"]  # the fit is stored with the teachers
    assert second[3]["fusion"] == first[3]["fusion"] and second[3]["test"] == first[3]["test"]


def test_results_files(two_runs):
    _, second, table, out = two_runs
    payload = json.loads((out / "r2" / "results.json").read_text())
    assert payload["dataset"] == "synth" and [r["name"] for r in payload["rows"]] == [r["name"] for r in second]
    md = (out / "r2" / "results.md").read_text()
    assert table in md and "| HetComp | student |" in md
    assert not [p for p in (out / "r2").iterdir() if p.name.startswith(".")]
    # the stages' wall times end the table, and the run's total
    stages = [s["stage"] for s in payload["stages"]]
    assert stages == ["teacher BPR (re-used from the store)", "teacher EASE (re-used from the store)",
                      "ensemble of BPR+EASE", "HetComp", "baseline: MF w/o KD (BPR, d=6)"]
    assert payload["total_s"] >= sum(s["s"] for s in payload["stages"]) - 0.5
    assert "| stage | wall time |" in table and "| **total** |" in table.splitlines()[-1]
    # what each ensemble is, the fit against the best teacher on validation, and what the students learn
    fit = payload["ensemble_fit"]
    assert "- Ensemble (equal weights): exp tau=10; weights BPR 1, EASE 1." in table
    assert (f"- Ensemble (fitted on validation): {second[3]['fusion']['text']} (greedy fit on validation recall@30, "
            f"re-used from the store): {fit['valid_score']:.4f} against the best teacher's ({fit['best_teacher']['name']})"
            f" {fit['best_teacher']['score']:.4f} and equal weights' {fit['equal_weights_score']:.4f}; on held-out "
            f"halves {fit['held_out']['fitted']:.4f} against {fit['held_out']['best_teacher']:.4f} and "
            f"{fit['held_out']['equal_weights']:.4f}.") in table
    assert "- The students learn the ensemble fitted on validation." in table


def test_cli_rejects_bad_arguments_with_one_line(synth_shared, capsys):
    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    code = cli.main(["-d", name, f"--data_path={data_path}", "--teachers", "BRP", "--no_student",
                     "--state=ERROR", "--show_progress=False"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown model 'BRP'" in err[0] and "bpr" in err[0]
    with pytest.raises(SystemExit) as exc:
        cli.main(["-d", name, "stray"])
    assert exc.value.code == 2
    assert "--key=value" in capsys.readouterr().err


def test_scoped_arguments_reach_only_their_model():
    from recbole_hetcomp.config import scoped_args

    args = ["--epochs=5", "--HetComp.embedding_size=8", "--BPR.learning_rate=0.01"]
    known = ["HetComp", "BPR", "EASE"]
    assert scoped_args(args, "HetComp", known) == ["--epochs=5", "--embedding_size=8"]
    assert scoped_args(args, "BPR", known) == ["--epochs=5", "--learning_rate=0.01"]
    assert scoped_args(args, "EASE", known) == ["--epochs=5"]
    with pytest.raises(ValueError, match="addressed to 'HetCom', which is not a model of this run"):
        scoped_args(["--HetCom.dkc=False"], "HetComp", known)


def test_the_students_model_scope_reaches_the_student():
    """``--student LightGCN --LightGCN.embedding_size=8`` sets the student when LightGCN is not a teacher; when it is,
    the scope is ambiguous and an error; an MF student (the default) routes nothing."""
    from recbole_hetcomp.config import scoped_args

    args = ["--HetComp.student=LightGCN", "--lightgcn.embedding_size=8", "--epochs=5"]
    assert scoped_args(args, "HetComp", ["HetComp", "BPR", "EASE"]) == ["--epochs=5", "--student=LightGCN",
                                                                       "--embedding_size=8"]
    assert scoped_args(args, "BPR", ["HetComp", "BPR", "EASE"]) == ["--epochs=5"]
    with pytest.raises(ValueError, match=r"^'--lightgcn.embedding_size=8' is ambiguous: lightgcn is a teacher of this "
                                         r"run and its student \(--student LightGCN\): write "
                                         r"--HetComp.embedding_size=\.\.\. to set the student, a line "
                                         r"'lightgcn.embedding_size: \.\.\.' in a --config_files yaml to set the "
                                         r"teacher, or leave lightgcn out of --teachers$"):
        scoped_args(args, "HetComp", ["HetComp", "BPR", "LightGCN"])
    with pytest.raises(ValueError, match="addressed to 'LightGCN', which is not a model of this run"):
        scoped_args(["--HetComp.student=MF", "--LightGCN.embedding_size=8"], "HetComp", ["HetComp", "BPR"])


def test_rows_time_full_ranking_and_the_ensemble_pays_for_every_teacher(two_runs):
    first, _, _, _ = two_runs
    for row in first:
        assert row["infer_ms_per_1k_users"] > 0, row["name"]
    teachers = first[:2]
    ens = first[2]
    assert ens["infer_ms_per_1k_users"] == pytest.approx(
        ens["fusion_ms_per_1k_users"] + sum(t["infer_ms_per_1k_users"] for t in teachers))
    fitted = first[3]
    active = [t for t in teachers if fitted["fusion"]["weights"][t["name"]] > 0]
    assert fitted["infer_ms_per_1k_users"] == pytest.approx(
        fitted["fusion_ms_per_1k_users"] + sum(t["infer_ms_per_1k_users"] for t in active))
    student = first[4]
    assert student["valid_curve"]["epochs"] and len(student["valid_curve"]["scores"]) == len(student["valid_curve"]["epochs"])


def test_a_run_re_using_its_teachers_times_them_itself(two_runs):
    """The second run re-uses both teachers from the store: their inference is timed by that run (the stored time
    is of where they trained), so its ensemble's time is all of this run's."""
    first, second, _, _ = two_runs
    for row in second[:2]:
        assert row["reused"] is True and row["infer_ms_from"] == "this run" and row["infer_ms_per_1k_users"] > 0
    assert [r["infer_ms_from"] for r in first[:2]] == ["this run", "this run"]
    assert second[2]["infer_ms_from"] == second[3]["infer_ms_from"] == "this run"
    assert second[2]["infer_ms_per_1k_users"] == pytest.approx(
        second[2]["fusion_ms_per_1k_users"] + sum(t["infer_ms_per_1k_users"] for t in second[:2]))


def test_saved_student_reloads_and_exports(two_runs, tmp_path):
    import csv

    from recbole_hetcomp.run.inference import export_topk_csv, load_data_and_model
    from recbole_hetcomp.run.training import Data, evaluate_model

    first, _, _, out = two_runs
    student = first[4]
    config, model, dataset, train, valid, test = load_data_and_model(student["model_file"])
    assert type(model).__name__ == "HetComp" and model.trajectories is None
    again = evaluate_model(model, Data(config, dataset, train, valid, test), phases=("test",))["test"]
    assert again == student["test"]

    path = export_topk_csv(tmp_path / "topk.csv", model, dataset, 5, users=["u3", "u10"])
    rows = list(csv.DictReader(open(path)))
    assert [(r["user_id"], r["rank"]) for r in rows] == [(u, str(k)) for u in ("u3", "u10") for k in range(1, 6)]
    known = dataset.inter_matrix(form="csr")
    for r in rows:
        u = dataset.token2id(dataset.uid_field, r["user_id"])
        i = dataset.token2id(dataset.iid_field, r["item_id"])
        assert i not in known.indices[known.indptr[u]:known.indptr[u + 1]]
    scores = [float(r["score"]) for r in rows[:5]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="unknown user id"):
        export_topk_csv(tmp_path / "bad.csv", model, dataset, 5, users=["nobody"])
    assert not (tmp_path / "bad.csv").exists()


def test_cli_runs_one_baseline_on_the_same_split(synth_shared, tmp_path, two_runs, capsys):
    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    first, _, _, _ = two_runs
    out = tmp_path / "bpr"
    code = cli.main(["-d", name, "--model", "BPR", "--output", str(out), f"--data_path={data_path}",
                     "--epochs=5", "--state=ERROR", "--show_progress=False", "--trajectory_top_n=30"])
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in payload["rows"]] == ["BPR"] and (out / "BPR.pth").is_file()
    # same split and protocol as the pipeline's teacher BPR: identical metrics
    assert payload["rows"][0]["test"] == first[0]["test"]
    code = cli.main(["-d", name, "--load", str(out / "BPR.pth"), "--export_topk", "3", "--users", "u1,u2",
                     "--output", str(out)])
    assert code == 0 and len((out / "topk.csv").read_text().splitlines()) == 1 + 2 * 3


def test_plots_are_written(two_runs):
    _, _, _, out = two_runs
    payload = json.loads((out / "r1" / "results.json").read_text())
    assert sorted(p.rsplit("/", 1)[1] for p in payload["plots"]) == ["curriculum.png", "validation.png"]
    for name in ("validation.png", "curriculum.png"):
        data = (out / "r1" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_synthetic_grouplens_archive_runs_as_ml_1m(synth_shared, tmp_path):
    """A small archive in the real ml-1m format goes through conversion and the whole pipeline."""
    import zipfile

    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    lines = (data_path / name / f"{name}.inter").read_text().splitlines()[1:]
    ratings = []
    for line in lines:  # u12  i34  4.0  1000123.0  ->  12::34::4::1000123
        u, i, r, t = line.split("\t")
        ratings.append(f"{u[1:]}::{i[1:]}::{int(float(r))}::{int(float(t))}")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-1m/ratings.dat", "\n".join(ratings) + "\n")
    root = tmp_path / "data"
    out = tmp_path / "out"
    code = cli.main(["-d", "ml-1m", "--archive", str(archive), "--teachers", "BPR,EASE", "--output", str(out),
                     f"--data_path={root}", f"--trajectory_store={tmp_path / 'store'}", "--epochs=5",
                     "--trajectory_top_n=30", "--HetComp.hetcomp_k=20", "--HetComp.hetcomp_p=5",
                     "--HetComp.dkc_k=10", "--state=ERROR", "--show_progress=False"])
    assert code == 0
    inter = (root / "ml-1m" / "ml-1m.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert len(inter) == 1 + len(ratings)
    payload = json.loads((out / "results.json").read_text())
    assert payload["dataset"] == "ml-1m"
    assert [r["kind"] for r in payload["rows"]] == ["teacher", "teacher", "ensemble", "ensemble", "student", "baseline"]


def test_missing_movielens_offline_is_one_clear_line(tmp_path, capsys):
    import run_recbole_hetcomp as cli

    code = cli.main(["-d", "ml-1m", f"--data_path={tmp_path / 'data'}", "--dataset_download=False",
                     "--teachers", "BPR", "--no_student", "--state=ERROR"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "ml-1m.zip" in err[0] and "--archive" in err[0]
    assert not (tmp_path / "data" / "ml-1m").exists()


def test_result_files_are_readable_by_others(two_runs):
    import stat

    _, _, _, out = two_runs
    for name in ("results.json", "results.md", "validation.png", "curriculum.png"):
        mode = stat.S_IMODE((out / "r1" / name).stat().st_mode)
        assert mode & stat.S_IROTH, name


def test_unwritable_output_fails_before_any_training(synth_shared, tmp_path, capsys, monkeypatch):
    import run_recbole_hetcomp as cli
    from recbole_hetcomp.run import pipeline

    monkeypatch.setattr(pipeline, "fit_teacher", lambda *a, **k: pytest.fail("trained despite a bad --output"))
    data_path, name = synth_shared
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code = cli.main(["-d", name, f"--data_path={data_path}", "--teachers", "BPR", "--output",
                     str(blocker / "out"), "--state=ERROR", "--show_progress=False"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "not writable" in err[0] and "--output" in err[0]


def test_one_dataset_build_per_run(two_runs):
    first_payload = json.loads((two_runs[3] / "r1" / "results.json").read_text())
    assert first_payload["dataset_builds"] == 1  # the check, two teachers, three students and the MF baseline


def test_a_shared_split_trains_exactly_as_its_own_build(synth_config, fresh_dir, tmp_path):
    """Loaders over the shared split give the same model as RecBole's own build of the same config."""
    from recbole_hetcomp.run import training

    with fresh_dir("shared_split"):
        alone = training.load_data(synth_config("BPR", epochs=3))
        _, own = training.train_model(alone, tmp_path)
        with training.shared_split():
            before = training.builds
            training.load_data(synth_config("EASE"))  # builds the split ...
            shared = training.load_data(synth_config("BPR", epochs=3))  # ... which BPR re-uses
            assert training.builds == before + 1
        _, again = training.train_model(shared, tmp_path)
        assert shared.fingerprint == alone.fingerprint and again["test"] == own["test"]
        assert again["valid"] == own["valid"]
        # other data settings are another split, built again
        with training.shared_split():
            before = training.builds
            training.load_data(synth_config("BPR"))
            training.load_data(synth_config("BPR", seed=7))
            assert training.builds == before + 2


def test_cli_kd_baselines_add_their_rows_learning_the_same_ensemble(synth_shared, tmp_path, two_runs, capsys):
    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    _, _, _, out = two_runs
    code = cli.main(["-d", name, "--teachers", "BPR,EASE", "--kd_baselines", "--output", str(tmp_path / "kd"),
                     f"--data_path={data_path}", f"--trajectory_store={out / 'store'}",  # the stored teachers
                     *[f"--{k}={v}" for k, v in SMALL.items()], "--HetComp.epochs=10", "--HetComp.eval_step=5"])
    assert code == 0
    rows = json.loads((tmp_path / "kd" / "results.json").read_text())["rows"]
    kd_rows = [r for r in rows if r["kind"] == "kd baseline"]
    assert [r["name"] for r in kd_rows] == ["RD (KD of the ensemble)", "RRD (KD of the ensemble)",
                                             "DCD (KD of the ensemble)", "CL-DRD (KD of the ensemble)"]
    student = next(r for r in rows if r["kind"] == "student")
    for r in kd_rows:
        assert r["params"] == student["params"] and r["fusion"] == student["fusion"]
        assert r["curriculum"]["steps"] == [] and r["test"]["recall@10"] > 0
    printed = capsys.readouterr().out
    assert all(r["name"] in printed for r in kd_rows)


def test_cli_student_lightgcn_and_its_own_baseline(synth_shared, tmp_path, two_runs, capsys):
    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    _, _, _, out = two_runs
    code = cli.main(["-d", name, "--teachers", "BPR,EASE", "--student", "lightgcn", "--output", str(tmp_path / "s"),
                     f"--data_path={data_path}", f"--trajectory_store={out / 'store'}",
                     *[f"--{k}={v}" for k, v in SMALL.items()], "--HetComp.epochs=10", "--HetComp.eval_step=5",
                     "--LightGCN.embedding_size=4"])  # the student's model as scope: the student (not a teacher here)
    assert code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "s" / "results.json").read_text())["rows"]
    student, baseline = rows[-2], rows[-1]
    assert student["name"] == "HetComp" and baseline["name"] == "LightGCN w/o KD (d=4)"
    assert student["params"] == baseline["params"] == 4 * (61 + 81)  # lightgcn: names are case-insensitive
    assert rows[0]["reused"]  # the teachers (BPR at its own settings) are the stored ones: --student is HetComp's


@pytest.mark.parametrize("student, message", [
    ("NeuMF", "student=NeuMF: it cannot score the whole catalogue"),
    ("SASRec", "student=SASRec: a SEQUENTIAL model"),
    ("Foo", "student=Foo: not a RecBole model"),
    ("EASE", "student=EASE: it is fitted in one shot"),
])
def test_cli_student_that_cannot_learn_is_one_line_before_training(synth_shared, tmp_path, capsys, student, message):
    import run_recbole_hetcomp as cli

    data_path, name = synth_shared
    code = cli.main(["-d", name, "--teachers", "BPR", "--student", student, "--output", str(tmp_path / "s"),
                     f"--data_path={data_path}", *[f"--{k}={v}" for k, v in SMALL.items()]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "s").exists() and not (tmp_path / "trajectories").exists()


@pytest.mark.parametrize("how", ["command line", "config dict"])
def test_a_teacher_the_user_weighs_0_leaves_the_student_too(synth_shared, fresh_dir, tmp_path, two_runs, how):
    """Given weights that drop a teacher (here by the user, on the command line or in the config dict), the student
    learns the run's fusion of the others: the weights reach it without the dropped teacher, wherever they were set."""
    data_path, name = synth_shared
    _, _, _, out = two_runs  # its store holds the teachers: nothing trains again but the student
    weights = {"BPR": 0.0, "EASE": 1.0}
    cfg = {**SMALL, "data_path": str(data_path), "trajectory_store": str(out / "store"), "epochs": 5}
    args = ["--HetComp.epochs=2"]
    if how == "command line":
        args.append(f"--teacher_weights={weights}")
    else:
        cfg["teacher_weights"] = weights
    with fresh_dir("weighs-0"):
        rows, _ = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, cmd_args=args, output=tmp_path / "r",
                               student=True)
    from recbole_hetcomp.trainer.base import load_checkpoint

    by_name = {r["name"]: r for r in rows}
    assert by_name["HetComp"]["fusion"].endswith("weights BPR 0, EASE 1")
    assert load_checkpoint(tmp_path / "r" / "HetComp.pth", "cpu")["config"]["teacher_weights"] == {"EASE": 1.0}
    ensemble = next(r for r in rows if r["kind"] == "ensemble" and r["name"] != "Ensemble (equal weights)")
    assert ensemble["teachers"] == ["EASE"]


def test_the_baseline_keeps_the_students_size_against_a_global_one(synth_shared, fresh_dir, tmp_path):
    """--embedding_size=8 --HetComp.embedding_size=4: the student is 4 wide, and so is the MF baseline its row names
    (the global value reaches the baseline too, and would otherwise win over the student's size)."""
    data_path, name = synth_shared
    cfg = {**SMALL, "data_path": str(data_path), "trajectory_store": str(tmp_path / "store")}
    with fresh_dir("baseline-size") as cwd:
        rows, _ = run_pipeline(name, teachers=["EASE"], config_dict=cfg, output=tmp_path / "r",
                               cmd_args=["--embedding_size=8", "--HetComp.embedding_size=4", "--HetComp.epochs=2"])
        assert sorted(p.name for p in cwd.iterdir()) == ["log", "log_tensorboard"]  # RecBole's logs; no ./saved
    student, baseline = rows[-2], rows[-1]
    assert baseline["name"] == "MF w/o KD (BPR, d=4)" and baseline["params"] == student["params"]


def test_without_keys():
    from recbole_hetcomp.config import without_keys

    args = ["--embedding_size=8", "--epochs=2", "--teacher_weights={'BPR': 0}", "--dkc=False"]
    assert without_keys(args, {"embedding_size": 4, "dkc": True}) == ["--epochs=2", "--teacher_weights={'BPR': 0}"]
    assert without_keys(args, ()) == args and without_keys(None, ("epochs",)) == []
