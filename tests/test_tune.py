"""Ray Tune: search-space loading, milestone subsets, and tiny searches on a local Ray (2 CPUs)."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recbole_hetcomp.distributed.search_space import default_space_file, load_search_space, to_tune
from recbole_hetcomp.trajectories.store import Trajectory

TINY = {"epochs": 3, "eval_step": 1, "stopping_step": 10, "hetcomp_k": 20, "trajectory_top_n": 20,
        "dkc_k": 10, "hetcomp_p": 3, "dkc_start": 1, "dkc_period": 1}


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- search spaces

def test_every_distribution_becomes_its_ray_domain(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    path = write(tmp_path, "learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
                           "dkc_alpha: {uniform: [1.01, 1.2]}\n"
                           "hetcomp_p: {randint: [5, 21]}\n"
                           "embedding_size: {choice: [4, 6, 8]}\n"
                           "ensemble_importance: {grid: [exp, rrf]}\n"
                           "epochs: 7\n")
    space = load_search_space(path)
    assert space == {"learning_rate": ("loguniform", [1e-4, 1e-2]), "dkc_alpha": ("uniform", [1.01, 1.2]),
                     "hetcomp_p": ("randint", [5, 21]), "embedding_size": ("choice", [4, 6, 8]),
                     "ensemble_importance": ("grid", ["exp", "rrf"]), "epochs": ("fixed", 7)}
    tuned = to_tune(space)
    assert isinstance(tuned["learning_rate"], Float) and type(tuned["learning_rate"].sampler).__name__ == "_LogUniform"
    assert (tuned["learning_rate"].lower, tuned["learning_rate"].upper) == (1e-4, 1e-2)
    assert isinstance(tuned["dkc_alpha"], Float) and type(tuned["dkc_alpha"].sampler).__name__ == "_Uniform"
    assert isinstance(tuned["hetcomp_p"], Integer) and (tuned["hetcomp_p"].lower, tuned["hetcomp_p"].upper) == (5, 21)
    assert isinstance(tuned["embedding_size"], Categorical) and tuned["embedding_size"].categories == [4, 6, 8]
    assert tuned["ensemble_importance"] == {"grid_search": ["exp", "rrf"]}
    assert tuned["epochs"] == 7
    for _ in range(50):
        assert 1e-4 <= tuned["learning_rate"].sample() <= 1e-2
        assert 5 <= tuned["hetcomp_p"].sample() < 21


def test_shipped_spaces_load_against_their_models_keys(synth_config):
    for model in ("HetComp", "BPR", "LightGCN"):
        keys = set(synth_config(model).final_config_dict)
        space = load_search_space(default_space_file(model), known_keys=keys)
        assert any(kind != "fixed" for kind, _ in space.values())
        to_tune(space)


@pytest.mark.parametrize("text, message", [
    ("lr: {normal: [0, 1]}", "unknown distribution 'normal'"),
    ("lr: {loguniforn: [0.1, 1]}", "did you mean loguniform?"),
    ("lr: {uniform: [1, 0.5]}", "needs [low, high] floats, low < high"),
    ("lr: {uniform: [0.1]}", "needs [low, high] floats"),
    ("lr: {uniform: [0.1, .inf]}", "needs [low, high] floats"),
    ("lr: {loguniform: [0, 1]}", "0 < low < high"),
    ("lr: {randint: [1.5, 4]}", "integers, low < high"),
    ("lr: {randint: [4, 4]}", "integers, low < high"),
    ("lr: {choice: []}", "a non-empty list of values"),
    ("lr: {grid: 3}", "a non-empty list of values"),
    ("lr: {choice: [1], uniform: [0, 1]}", "exactly one distribution"),
    ("lr: 0.1", "fixes every key"),
    ("- lr", "non-empty mapping"),
    ("", "non-empty mapping"),
    ("lr: {choice: [1, 2]\nx: 1", "is not valid yaml (line"),
])
def test_bad_spaces_are_named(tmp_path, text, message):
    with pytest.raises(ValueError) as err:
        load_search_space(write(tmp_path, text))
    assert message in str(err.value) and "space.yaml" in str(err.value)


def test_unknown_key_suggests_close_matches(tmp_path):
    with pytest.raises(ValueError, match=r"'learnin_rate' is not a config key of this model; did you mean learning_rate"):
        load_search_space(write(tmp_path, "learnin_rate: {choice: [1, 2]}"), known_keys={"learning_rate", "epochs"})


def test_missing_space_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist: give an existing yaml file with --search_space"):
        load_search_space(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- milestone subsets

def _trajectory():
    top = torch.arange(4 * 3 * 2, dtype=torch.int32).reshape(4, 3, 2)
    meta = {"milestones": [0.25, 0.5, 0.75, 1.0], "milestone_epochs": [1, 3, 5, 9],
            "milestone_valid_scores": [0.1, 0.2, 0.3, 0.4], "split_fingerprint": "f"}
    return Trajectory("BPR", top, torch.zeros(0, dtype=torch.int32), torch.zeros(4, dtype=torch.int64), meta)


def test_at_milestones_keeps_the_chosen_points():
    traj = _trajectory()
    sub = traj.at_milestones([0.5, 1.0])
    assert torch.equal(sub.top, traj.top[[1, 3]])
    assert sub.meta["milestones"] == [0.5, 1.0]
    assert sub.meta["milestone_epochs"] == [3, 9] and sub.meta["milestone_valid_scores"] == [0.2, 0.4]
    assert traj.meta["milestones"] == [0.25, 0.5, 0.75, 1.0]  # the original is untouched
    with pytest.raises(ValueError, match=r"recorded at milestones \[0.25, 0.5, 0.75, 1.0\], not \[0.6\]"):
        traj.at_milestones([0.6, 1.0])


def test_milestone_union():
    from recbole_hetcomp.distributed.tune import _milestone_union

    space = {"trajectory_milestones": ("choice", [[0.5, 1.0], [0.2, 1.0]])}
    assert _milestone_union(space, [0.25, 0.5, 0.75, 1.0]) == [0.2, 0.5, 1.0]
    assert _milestone_union({"trajectory_milestones": ("choice", [[0.5, 1.0]])}, [0.5, 1.0]) is None
    assert _milestone_union({}, [0.5, 1.0]) is None
    with pytest.raises(ValueError, match="only with {choice"):
        _milestone_union({"trajectory_milestones": ("uniform", [0.1, 0.9])}, [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        _milestone_union({"trajectory_milestones": ("choice", [[1.0, 0.5]])}, [1.0])


# ---------------------------------------------------------------- searches on a local Ray

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _cli(synth, tmp_path, *extra):
    data_path, name = synth
    return ["-d", name, "--output", str(tmp_path / "out"), f"--data_path={data_path}",
            f"--trajectory_store={tmp_path / 'store'}", "--show_progress=False", "--state=ERROR",
            *[f"--{k}={v}" for k, v in TINY.items()], *extra]


def test_hetcomp_search_reports_every_evaluation_and_picks_the_best(local_ray, synth, tmp_path, capsys):
    import run_recbole_hetcomp as cli

    space = write(tmp_path, "learning_rate: {grid: [0.0, 0.01, 0.05]}\n"
                            "trajectory_milestones: {choice: [[0.5, 1.0]]}\n")
    argv = _cli(synth, tmp_path, "--tune", "--search_space", str(space), "--num_samples", "1",
                "--scheduler", "fifo", "--teachers", "BPR,Pop")
    assert cli.main(argv) == 0
    out = tmp_path / "out" / "tune"
    summary = json.loads((out / "tune_results.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["status"] == "finished" and t["attempts"] == 1 for t in trials)
    # one report per evaluation (3 epochs, eval_step 1), the final one apart
    assert all(t["evaluations"] == 3 for t in trials)
    best = max(trials, key=lambda t: t["best_valid"])
    assert summary["best"]["trial"] == best["trial"]
    assert summary["best"]["best_valid"] == max(t["best_valid"] for t in trials)
    assert all(set(t["test"]) == {"recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50"}
               for t in trials)
    # each trial has its own directory and saved model
    assert len({t["trial_dir"] for t in trials}) == 3
    assert all(t["model_file"] and t["model_file"].startswith(t["trial_dir"]) for t in trials)
    assert all(list(Path(t["trial_dir"]).glob("log/**/*.log")) for t in trials)  # RecBole's log, per trial
    assert yaml.safe_load((out / "best_config.yaml").read_text()) == best["params"]
    assert "| trial | status | attempts |" in (out / "trials.md").read_text()
    assert "python run_recbole_hetcomp.py -d synth --HetComp.learning_rate=" in capsys.readouterr().out
    # teachers trained once, before the search, at the searched milestones
    stored = sorted(p.name.split("-")[0] for p in (tmp_path / "store" / "synth").iterdir() if p.name != "fits")
    assert stored == ["BPR", "Pop"]
    # the ensemble was fitted once, before the trials, and stored beside the teachers
    assert len(list((tmp_path / "store" / "synth" / "fits").glob("fit-*.json"))) == 1
    assert summary["ensemble"].startswith("fitted on validation: ")
    meta = json.loads(next((tmp_path / "store" / "synth").glob("BPR-*/meta.json")).read_text())
    assert meta["milestones"] == [0.5, 1.0]


def test_searching_the_fusion_needs_the_fit_off(synth, tmp_path):
    """Every trial learns the ensemble fitted once before the trials: a space that searches a fusion key while the fit
    is on is one line before Ray starts (and before anything is written); with the fit off it is allowed."""
    from recbole_hetcomp.distributed.tune import run_tune

    data_path, name = synth
    space = write(tmp_path, "learning_rate: {choice: [0.01, 0.05]}\nensemble_tau: {choice: [5.0, 20.0]}\n")
    config = {"data_path": str(data_path), "show_progress": False, "state": "ERROR", **TINY}
    with pytest.raises(ValueError, match=r"^ensemble_tau is searched in .*space.yaml, but the ensemble is fitted on "
                                         r"validation once, before the trials, and every trial learns it "
                                         r"\(ensemble_fit: True\): remove it from the search space, or set "
                                         r"--ensemble_fit=False to search it$"):
        run_tune("HetComp", name, space_file=space, output=tmp_path / "out", config_dict=config, teachers=["BPR"])
    assert not (tmp_path / "out").exists()


def test_with_the_fit_off_a_trial_searches_the_fusion_and_says_so(local_ray, synth, tmp_path):
    import run_recbole_hetcomp as cli

    space = write(tmp_path, "ensemble_tau: {grid: [5.0, 20.0]}\n")
    argv = _cli(synth, tmp_path, "--tune", "--search_space", str(space), "--num_samples", "1", "--scheduler", "fifo",
                "--teachers", "BPR,Pop", "--ensemble_fit=False")
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "out" / "tune" / "tune_results.json").read_text())
    assert sorted(t["params"]["ensemble_tau"] for t in summary["trials"]) == [5.0, 20.0]
    assert summary["ensemble"] == "equal weights: exp tau=10; weights BPR 1, Pop 1"
    assert summary["ensemble_searched"] == ["ensemble_tau"]
    assert not (tmp_path / "store" / "synth" / "fits").exists()  # nothing was fitted
    assert ("Every trial learns the ensemble equal weights: exp tau=10; weights BPR 1, Pop 1, with its own ensemble_tau "
            "(searched).") in (tmp_path / "out" / "tune" / "trials.md").read_text()


def test_a_teacher_the_user_weighs_0_leaves_every_trial(local_ray, synth, tmp_path):
    """--teacher_weights drops Pop: the ensemble every trial learns is BPR's alone, and the trials run (the weights
    on the command line named Pop to a student that no longer has it)."""
    import run_recbole_hetcomp as cli

    space = write(tmp_path, "learning_rate: {grid: [0.01]}\n")
    argv = _cli(synth, tmp_path, "--tune", "--search_space", str(space), "--num_samples", "1", "--scheduler", "fifo",
                "--teachers", "BPR,Pop", "--teacher_weights={'BPR': 1.0, 'Pop': 0.0}")
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "out" / "tune" / "tune_results.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["finished"]
    assert summary["ensemble"].endswith("weights BPR 1, Pop 0")


def test_asha_stops_a_worse_trial_early(local_ray, synth, tmp_path):
    from recbole_hetcomp.distributed.tune import run_tune

    # One trial at a time, the good learning rate first: the others (no learning) score below it
    # at a rung (grace period 1: rungs at 1, 2 and 4 evaluations) and ASHA stops them there.
    data_path, name = synth
    space = write(tmp_path, "learning_rate: {grid: [0.05, 0.0, 0.0]}\nembedding_size: 16\n")
    summary, table = run_tune("BPR", name, space_file=space, num_samples=1, scheduler="asha",
                              output=tmp_path / "out",
                              config_dict={"data_path": str(data_path), "show_progress": False, "state": "ERROR",
                                           "epochs": 6, "eval_step": 1, "stopping_step": 10,
                                           "tune_grace_period": 1, "tune_max_concurrent_trials": 1})
    status = [t["status"] for t in summary["trials"]]
    assert status[0] == "finished" and summary["trials"][0]["params"]["learning_rate"] == 0.05
    assert all(s.startswith("stopped early at epoch ") for s in status[1:]), status
    stopped = [t for t in summary["trials"] if t["status"].startswith("stopped")]
    assert all(t["evaluations"] < 6 and t["test"] == {} for t in stopped)
    assert "stopped early" in table


def test_a_crashing_trial_is_retried_and_reported_without_losing_the_others(local_ray, synth, tmp_path):
    from recbole_hetcomp.distributed.tune import run_tune

    data_path, name = synth
    space = write(tmp_path, "learning_rate: {grid: [-1.0, 0.01]}\n")  # Adam refuses a negative rate
    summary, _ = run_tune("BPR", name, space_file=space, num_samples=1, scheduler="fifo", output=tmp_path / "out",
                          config_dict={"data_path": str(data_path), "show_progress": False, "state": "ERROR",
                                       "epochs": 2, "eval_step": 1, "tune_max_failures": 1})
    by_lr = {t["params"]["learning_rate"]: t for t in summary["trials"]}
    assert by_lr[-1.0]["status"].startswith("failed: ") and "learning rate" in by_lr[-1.0]["status"]
    assert by_lr[-1.0]["attempts"] == 2  # the first run and one retry
    assert by_lr[0.01]["status"] == "finished" and by_lr[0.01]["attempts"] == 1
    assert summary["best"]["params"] == {"learning_rate": 0.01}


def test_a_trial_run_again_counts_its_last_run_only():
    import pandas as pd

    from recbole_hetcomp.distributed.tune import _last_attempt

    # a trial killed after two reports, then run again from the start (resumed search or retry)
    df = pd.DataFrame({"training_iteration": [1, 2, 1, 2, 3, 4], "valid_ndcg@10": [.1, .2, .1, .2, .3, .4]})
    assert list(_last_attempt(df)["valid_ndcg@10"]) == [.1, .2, .3, .4]
    assert _last_attempt(df.iloc[:2]).equals(df.iloc[:2]) and _last_attempt(None) is None


def test_parallel_teachers_write_the_same_store_as_sequential(local_ray, synth, tmp_path):
    from recbole_hetcomp.distributed.parallel import RayTeachers
    from recbole_hetcomp.run.pipeline import build_teachers
    from recbole_hetcomp.trajectories.store import TrajectoryStore

    data_path, name = synth
    base = {"data_path": str(data_path), "show_progress": False, "state": "ERROR", **TINY}
    teachers = ["BPR", "CML"]
    _, seq = build_teachers(name, teachers, config_dict={**base, "trajectory_store": str(tmp_path / "seq")})
    _, par = build_teachers(name, teachers, config_dict={**base, "trajectory_store": str(tmp_path / "par")},
                            parallel=RayTeachers(cpus=1))
    seq_dirs = sorted(p.name for p in (tmp_path / "seq" / name).iterdir())
    par_dirs = sorted(p.name for p in (tmp_path / "par" / name).iterdir())
    assert seq_dirs == par_dirs and len(seq_dirs) == 2  # same teacher keys, no temporary leftovers
    for s, p in zip(seq, par):
        assert s.teacher == p.teacher and torch.equal(s.top, p.top)
        assert torch.equal(s.obs_items, p.obs_items) and s.meta["test"] == p.meta["test"]
        # where each trained (never part of the key): this process, or a Ray worker on a Ray node
        assert s.meta["trained_on"]["ray_node"] is None and s.meta["trained_on"]["pid"] == os.getpid()
        assert p.meta["trained_on"]["ray_node"] and p.meta["trained_on"]["pid"] != os.getpid()
    # and the parallel store is a valid store a sequential run re-uses
    store = TrajectoryStore(tmp_path / "par")
    for d in par_dirs:
        teacher, key = d.split("-", 1)
        assert store.exists(name, teacher, key)
    _, again = build_teachers(name, teachers, config_dict={**base, "trajectory_store": str(tmp_path / "par")})
    assert all(t.meta["reused"] for t in again)
    assert not math.isnan(float(np.mean([t.meta["test"]["recall@20"] for t in again])))
