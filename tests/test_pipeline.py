"""The pipeline and the command line, end to end on the synthetic data."""

import json

import pytest

from recbole_hetcomp.pipeline import run_pipeline

SMALL = {"epochs": 5, "trajectory_top_n": 30, "hetcomp_k": 20, "hetcomp_p": 5, "dkc_k": 10,
         "show_progress": False, "state": "ERROR"}


@pytest.fixture(scope="module")
def two_runs(synth_shared, fresh_dir, tmp_path_factory):
    data_path, name = synth_shared
    out = tmp_path_factory.mktemp("out")
    cfg = {**SMALL, "data_path": str(data_path), "trajectory_store": str(out / "store")}
    with fresh_dir("pipeline"):
        first, _ = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, output=out / "r1", ablations=True)
        second, table = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, output=out / "r2")
    return first, second, table, out


def test_rows_cover_teachers_ensemble_student_ablations_and_baseline(two_runs):
    first, _, _, _ = two_runs
    assert [(r["name"], r["kind"]) for r in first] == [
        ("BPR", "teacher"), ("EASE", "teacher"), ("Ensemble(BPR+EASE)", "ensemble"),
        ("HetComp", "student"), ("HetComp w/o DKC (ensemble KD)", "ablation"), ("HetComp w/o AKT", "ablation"),
        ("MF w/o KD (BPR, d=6)", "baseline")]
    for row in first:
        assert set(row["test"]) >= {"recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50"}
    student = first[3]
    assert student["params"] == 6 * (61 + 81)  # (users + padding) and (items + padding) embeddings
    assert first[-1]["params"] == student["params"]
    assert first[2]["params"] == first[0]["params"] + first[1]["params"]
    assert "curriculum" in student and "loss_switch_epoch" in student["curriculum"]


def test_second_run_reuses_the_teachers(two_runs):
    first, second, _, _ = two_runs
    assert [r["reused"] for r in second[:2]] == [True, True]
    assert [r["reused"] for r in first[:2]] == [False, False]
    assert second[0]["test"] == first[0]["test"] and second[2]["test"] == first[2]["test"]


def test_results_files(two_runs):
    _, second, table, out = two_runs
    payload = json.loads((out / "r2" / "results.json").read_text())
    assert payload["dataset"] == "synth" and [r["name"] for r in payload["rows"]] == [r["name"] for r in second]
    md = (out / "r2" / "results.md").read_text()
    assert table in md and "| HetComp | student |" in md
    assert not [p for p in (out / "r2").iterdir() if p.name.startswith(".")]


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
    from recbole_hetcomp.pipeline import scoped_args

    args = ["--epochs=5", "--HetComp.embedding_size=8", "--BPR.learning_rate=0.01"]
    known = ["HetComp", "BPR", "EASE"]
    assert scoped_args(args, "HetComp", known) == ["--epochs=5", "--embedding_size=8"]
    assert scoped_args(args, "BPR", known) == ["--epochs=5", "--learning_rate=0.01"]
    assert scoped_args(args, "EASE", known) == ["--epochs=5"]
    with pytest.raises(ValueError, match="addressed to 'HetCom', which is not a model of this run"):
        scoped_args(["--HetCom.dkc=False"], "HetComp", known)
