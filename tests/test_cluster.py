"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``).

The head runs no work (0 CPUs); two worker nodes have one CPU each, so two teachers or two
trials asking for one CPU each can only run one on each node. On it: the teachers train as Ray
tasks on both nodes and record their node; a node killed while its teacher trains has the task
retried on the other node, with the lists and metrics of a sequential run; Tune trials spread
over both nodes; a search whose driver is killed resumes without training its finished trials
again. Minutes in all: ``slow``.
"""

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import QUIET

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = {"epochs": 3, "eval_step": 1, "stopping_step": 10, "trajectory_top_n": 20}


@pytest.fixture
def cluster():
    """A head (no CPU) and two worker nodes of one CPU each; shut down even when the test fails."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another test left Ray running"
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        # the driver joins before the workers exist: it connects to the first node of its address
        ray.init(address=head.address, log_to_driver=False)
        workers = [head.add_node(num_cpus=1) for _ in range(2)]
        head.wait_for_nodes()
        ids = {n["RayletSocketName"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
        yield SimpleNamespace(cluster=head, address=head.address, workers=workers,
                              ids=[ids[w.raylet_socket_name] for w in workers])
    finally:
        ray.shutdown()
        head.shutdown()


def wait_for(find, timeout, what, alive=None):
    """Poll ``find()`` until it returns something (or ``alive()`` turns false); fail after ``timeout`` s."""
    end = time.time() + timeout
    while time.time() < end:
        found = find()
        if found:
            return found
        if alive is not None and not alive():
            pytest.fail(f"gave up waiting for {what}: the run ended first")
        time.sleep(0.05)
    pytest.fail(f"no {what} after {timeout} s")


def stored(store, dataset):
    """Each stored teacher of ``store``: directory name -> (top.npy, meta.json)."""
    out = {}
    for d in sorted((Path(store) / dataset).iterdir()):
        out[d.name] = (np.load(d / "top.npy"), json.loads((d / "meta.json").read_text()))
    return out


def assert_same_teachers(seq, par):
    """The same teacher keys, stored lists (every point of top.npy) and metrics."""
    assert sorted(seq) == sorted(par)
    for name in seq:
        (top_s, meta_s), (top_p, meta_p) = seq[name], par[name]
        assert np.array_equal(top_s, top_p), name
        for k in ("valid", "test", "best_valid_score", "milestone_epochs", "milestone_valid_scores"):
            assert meta_s[k] == meta_p[k], (name, k)


def teacher_config(synth, store, **extra):
    data_path, _ = synth
    return {"data_path": str(data_path), **QUIET, **TINY, "trajectory_store": str(store), **extra}


# ---------------------------------------------------------------- teachers as Ray tasks

def test_teachers_run_on_both_worker_nodes_and_record_their_node(cluster, synth, tmp_path):
    from recbole_hetcomp.distributed.parallel import RayTeachers
    from recbole_hetcomp.run.pipeline import build_teachers

    _, name = synth
    teachers = ["BPR", "CML"]
    build_teachers(name, teachers, config_dict=teacher_config(synth, tmp_path / "par"), parallel=RayTeachers(cpus=1))
    build_teachers(name, teachers, config_dict=teacher_config(synth, tmp_path / "seq"))
    par, seq = stored(tmp_path / "par", name), stored(tmp_path / "seq", name)
    assert_same_teachers(seq, par)
    # one teacher on each worker node (none on the head), each meta.json naming its node
    where = [meta["trained_on"] for _, meta in par.values()]
    assert sorted(w["ray_node"] for w in where) == sorted(cluster.ids)
    assert all(w["host"] == platform.node() and w["pid"] != os.getpid() for w in where)
    assert all(meta["trained_on"] == {"host": platform.node(), "pid": os.getpid(), "ray_node": None}
               for _, meta in seq.values())
    # a re-used teacher keeps the record of where it was trained
    _, again = build_teachers(name, teachers, config_dict=teacher_config(synth, tmp_path / "par"))
    assert all(t.meta["reused"] for t in again)
    assert [t.meta["trained_on"] for t in again] == where


def test_a_teacher_whose_node_dies_is_retried_on_the_other_node(cluster, synth, tmp_path):
    from recbole_hetcomp.distributed.parallel import RayTeachers
    from recbole_hetcomp.run.pipeline import build_teachers

    _, name = synth
    long = {"epochs": 300, "stopping_step": 1000}  # seconds of training: the kill lands inside it
    par_store = tmp_path / "par"
    outcome = {}

    def run():
        try:
            build_teachers(name, ["BPR"], config_dict=teacher_config(synth, par_store, **long),
                           parallel=RayTeachers(cpus=1))
            outcome["done"] = True
        except BaseException as e:  # reported by the test below
            outcome["error"] = e

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    # a teacher in training writes trained_on.json into its temporary directory: its node is known
    owner = wait_for(lambda: next((par_store / name).glob(".train-BPR-*/trained_on.json"), None), 300,
                     "teacher in training", alive=driver.is_alive)
    first = json.loads(owner.read_text())
    victim = cluster.workers[cluster.ids.index(first["ray_node"])]
    cluster.cluster.remove_node(victim, allow_graceful=False)
    driver.join(timeout=400)
    assert not driver.is_alive() and outcome.get("done"), outcome.get("error")
    par = stored(par_store, name)
    (key,) = par
    trained = par[key][1]["trained_on"]
    survivor = cluster.ids[1 - cluster.ids.index(first["ray_node"])]
    assert trained["ray_node"] == survivor and trained["pid"] != first["pid"], (first, trained)
    # the killed attempt left nothing: the retry removed its temporary directory (same host, owner gone)
    assert [p.name for p in (par_store / name).iterdir()] == [key]
    # and the teacher is exactly the one a sequential run of the same seed trains
    build_teachers(name, ["BPR"], config_dict=teacher_config(synth, tmp_path / "seq", **long))
    assert_same_teachers(stored(tmp_path / "seq", name), par)


# ---------------------------------------------------------------- Ray Tune on the cluster

def _tune_args(synth, tmp_path, space):
    data_path, name = synth
    return ["--model", "BPR", "--tune", "--search_space", str(space), "--num_samples", "1", "--scheduler", "fifo",
            "-d", name, "--output", str(tmp_path / "out"), f"--data_path={data_path}", "--show_progress=False",
            "--state=ERROR", "--epochs=3", "--eval_step=1"]


def test_tune_trials_spread_over_the_worker_nodes(cluster, synth, tmp_path):
    import run_recbole_hetcomp as cli

    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {grid: [0.01, 0.05]}\n")
    assert cli.main([*_tune_args(synth, tmp_path, space), "--ray_address", cluster.address]) == 0
    trials = json.loads((tmp_path / "out" / "tune" / "tune_results.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["finished", "finished"]
    assert sorted(t["trained_on"]["ray_node"] for t in trials) == sorted(cluster.ids)


def trial_id(folder):
    """The Tune id of the trial whose directory is ``folder`` (from its first result)."""
    return json.loads((folder / "result.json").read_text().splitlines()[0])["trial_id"]


def test_an_interrupted_search_resumes_without_training_finished_trials_again(cluster, synth, tmp_path):
    import run_recbole_hetcomp as cli

    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {grid: [0.0, 0.01, 0.05]}\n")
    argv = [*_tune_args(synth, tmp_path, space), "--ray_address", cluster.address]
    experiments = tmp_path / "out" / "tune" / "ray"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, str(REPO / "run_recbole_hetcomp.py"), *argv], cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for(lambda: list(experiments.glob("*/*/final.json")), 300, "finished trial",
                 alive=lambda: driver.poll() is None)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished = {trial_id(p.parent): p.parent for p in experiments.glob("*/*/final.json")}
    (experiment,) = experiments.iterdir()
    assert json.loads((tmp_path / "out" / "tune" / "search.json").read_text())["finished"] is False
    assert not (tmp_path / "out" / "tune" / "tune_results.json").exists()

    assert cli.main(argv) == 0  # the same command again
    summary = json.loads((tmp_path / "out" / "tune" / "tune_results.json").read_text())
    assert summary["experiment_dir"] == str(experiment) and list(experiments.iterdir()) == [experiment]
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["status"] == "finished" for t in trials), trials
    assert sorted(t["params"]["learning_rate"] for t in trials) == [0.0, 0.01, 0.05]
    by_id = {t["trial"]: t for t in trials}
    assert set(finished) <= set(by_id)
    for trial, folder in finished.items():  # trained once, before the kill: never again, in no directory
        assert len((folder / "attempts.log").read_text().splitlines()) == 1, folder
        assert by_id[trial]["attempts"] == 1 and by_id[trial]["evaluations"] == 3, by_id[trial]
    assert json.loads((tmp_path / "out" / "tune" / "search.json").read_text())["finished"] is True
