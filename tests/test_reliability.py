"""Reliability (issue 7): bad input gets one clear line, faults and interruptions lose nothing.

- Bad input through the command line: one ``error:`` line on stderr, exit status 2, no traceback,
  and nothing written (no results, no store, no partial ``.inter``), checked before training.
- Damaged, foreign or old stores are named before use; ``--rebuild_teachers`` recovers.
- Interruption: SIGKILL while the second teacher trains, then the same command again, re-uses
  the first teacher, retrains the second and ends with exactly the results of an uninterrupted
  run; SIGINT exits 130 with one line and leaves no temporary directory.
- Determinism: two CPU runs with the same seed give identical metrics.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import STORE_DAMAGE, write_synth

import run_recbole_hetcomp as cli
from recbole_hetcomp.trajectories.store import TrajectoryStore, owner_tag, stale_owner

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "run_recbole_hetcomp.py"
QUIET_ARGS = ["--state=ERROR", "--show_progress=False"]
SMALL_ARGS = ["--epochs=2", "--trajectory_top_n=30", "--hetcomp_k=20", "--hetcomp_p=5", "--dkc_k=10"]


# ----------------------------------------------------------------------------- data for bad input


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """A data folder with the synthetic dataset and broken variants of it, plus bad yaml and archives."""
    root = tmp_path_factory.mktemp("bad_data")
    data = root / "data"
    write_synth(data)
    good = (data / "synth" / "synth.inter").read_text().splitlines()
    header, rows = good[0], good[1:]
    _write(data / "empty" / "empty.inter", "")
    _write(data / "headeronly" / "headeronly.inter", header + "\n")
    _write(data / "commas" / "commas.inter", "\n".join(line.replace("\t", ",") for line in good) + "\n")
    _write(data / "shortline" / "shortline.inter", "\n".join([header, *rows[:30], "u5\ti3", *rows[30:]]) + "\n")
    _write(data / "badfloat" / "badfloat.inter", "\n".join([header, *rows[:30], "u5\ti3\t4.0\tyesterday",
                                                              *rows[30:]]) + "\n")
    _write(data / "noitem" / "noitem.inter", "\n".join([header.replace("item_id", "movie_id"), *rows]) + "\n")
    (data / "nointer").mkdir()
    # every user has one interaction: RecBole's ratio split keeps it for training
    _write(data / "single" / "single.inter", "\n".join([header] + [f"u{u}\ti{u % 50}\t1.0\t{u}.0"
                                                                   for u in range(60)]) + "\n")
    ratings = []
    for line in rows:
        u, i, r, t = line.split("\t")
        ratings.append(f"{u[1:]}::{i[1:]}::{int(float(r))}::{int(float(t))}")
    good_zip = root / "ml-1m.zip"
    with zipfile.ZipFile(good_zip, "w") as z:
        z.writestr("ml-1m/ratings.dat", "\n".join(ratings) + "\n")
    blob = good_zip.read_bytes()
    (root / "truncated.zip").write_bytes(blob[: len(blob) // 2])
    _write(root / "tabs.dat", "\n".join(r.replace("::", "\t") for r in ratings) + "\n")
    _write(root / "ids.dat", "\n".join(["u1::m2::3::978300760", *ratings]) + "\n")
    _write(root / "blank.dat", "")
    _write(root / "broken.yaml", "epochs: [1, 2\nlearning_rate: 0.1\n")
    _write(root / "typo.yaml", "epochs: 2\nlerning_rate: 0.1\n")
    _write(root / "list.yaml", "- epochs\n- 2\n")
    _write(root / "scoped.yaml", "BPR.lerning_rate: 0.1\n")
    _write(root / "noscope.yaml", "BRP.learning_rate: 0.1\n")
    blocker = _write(root / "a_file", "not a directory")
    return root, data, blocker


def _snapshot(*folders):
    out = set()
    for folder in folders:
        for path in Path(folder).rglob("*"):
            rel = path.relative_to(folder)
            if rel.parts[0] in ("log", "log_tensorboard"):
                continue
            out.add(path)
    return out


def _case(root, data, blocker):
    """(id, argv, substrings of the one line) of every bad input run through the command line."""
    d = ["-d", "synth", f"--data_path={data}"]
    run = ["--teachers", "BPR"]
    small = ["--trajectory_top_n=30", "--hetcomp_k=20", "--dkc_k=10", "--hetcomp_p=5"]
    return [
        ("unknown --model", [*d, "--model", "BRP"], ["unknown model 'BRP'", "Did you mean: bpr"]),
        ("unknown teacher", [*d, "--teachers", "BPR,LigthGCN"], ["unknown model 'LigthGCN'", "lightgcn"]),
        ("sequential teacher", [*d, "--teachers", "BPR,SASRec"], ["teacher 'SASRec' is a sequential recommender",
                                                                  "not a general one", "choose e.g. BPR"]),
        ("student as teacher", [*d, "--teachers", "BPR,HetComp"], ["'HetComp' cannot be a teacher"]),
        ("teacher twice", [*d, "--teachers", "BPR,bpr"], ["teacher BPR is listed twice"]),
        ("K > catalogue", [*d, *run, "--trajectory_top_n=30", "--hetcomp_k=500"],
         ["hetcomp_k=500 is larger than the catalogue allows", "80 items", "at most 59"]),
        ("K > N", [*d, *run, "--trajectory_top_n=30", "--hetcomp_k=40"],
         ["hetcomp_k=40 is larger than trajectory_top_n=30", "raise --trajectory_top_n to at least 40"]),
        ("dkc_k > N", [*d, *run, "--trajectory_top_n=30", "--hetcomp_k=20", "--dkc_k=50"],
         ["dkc_k=50 is larger than trajectory_top_n=30"]),
        ("K not a number", [*d, *run, "--trajectory_top_n=30", "--hetcomp_k=many"],
         ["hetcomp_k=many: must be an integer > 0"]),
        ("N > catalogue", [*d, *run, "--trajectory_top_n=500"],
         ["trajectory_top_n=500 must be an integer in [1, 59]", "set --trajectory_top_n to at most 59"]),
        ("milestones decreasing", [*d, *run, "--trajectory_milestones=[0.5,0.25,1.0]"],
         ["strictly increasing", "--trajectory_milestones=[0.25,0.5,0.75,1.0]"]),
        ("milestones outside (0, 1]", [*d, *run, "--trajectory_milestones=[0.5,1.5]"],
         ["trajectory_milestones=[0.5, 1.5]: must be a list of numbers in (0, 1]"]),
        ("milestones not a list", [*d, *run, "--trajectory_milestones=abc"], ["must be a list of numbers"]),
        ("a teacher on another split", [*d, "--teachers", "BPR,EASE", *small, "--BPR.seed=3"],
         ["BPR would train on another split than the run's: seed=3 (the run's: 2020)", "set seed for the whole run"]),
        ("teachers' lists of two lengths", [*d, "--teachers", "BPR,EASE", *small, "--EASE.trajectory_top_n=25"],
         ["trajectory_top_n differs between teachers (BPR 30, EASE 25)", "set --trajectory_top_n once"]),
        ("student milestones no teacher records", [*d, *run, *small, "--HetComp.trajectory_milestones=[0.3,1.0]"],
         ["the student learns at trajectory_milestones [0.3, 1.0], but teacher BPR records [0.25, 0.5, 0.75, 1.0] "
          "(not [0.3])"]),
        ("every teacher weighed 0", [*d, "--teachers", "BPR,EASE", *small, "--teacher_weights={'BPR':0,'EASE':0}"],
         ["teacher_weights={'BPR': 0, 'EASE': 0} gives every teacher weight 0"]),
        ("unknown --key", [*d, *run, "--lerning_rate=0.1"],
         ["unknown config key --lerning_rate (did you mean learning_rate?)", "(BPR, HetComp)"]),
        ("unknown --Model.key", [*d, "--teachers", "BPR,LightGCN", "--LightGCN.n_layer=2"],
         ["unknown config key --LightGCN.n_layer (did you mean n_layers?)", "(LightGCN)"]),
        ("unknown key, baseline", [*d, "--model", "BPR", "--embeding_size=4"],
         ["unknown config key --embeding_size (did you mean embedding_size?)"]),
        ("scope of no model", [*d, *run, "--HetCom.dkc=False"], ["addressed to 'HetCom'", "not a model of this run"]),
        ("key given twice", [*d, *run, "--epochs=2", "--epochs=3"], ["--epochs given twice with different values"]),
        ("yaml does not parse", [*d, *run, "--config_files", str(root / "broken.yaml")],
         ["broken.yaml is not valid YAML at line 2, column 14"]),
        ("yaml missing", [*d, *run, "--config_files", str(root / "nope.yaml")], ["nope.yaml does not exist"]),
        ("yaml not a mapping", [*d, *run, "--config_files", str(root / "list.yaml")],
         ["list.yaml holds a list, not 'key: value' lines"]),
        ("yaml unknown key", [*d, *run, "--config_files", str(root / "typo.yaml")],
         ["unknown config key 'lerning_rate' in", "typo.yaml (did you mean learning_rate?)"]),
        ("yaml unknown <Model>.key", [*d, "--teachers", "BPR,EASE", "--config_files", str(root / "scoped.yaml")],
         ["unknown config key 'BPR.lerning_rate' in", "scoped.yaml (did you mean learning_rate?)", "(BPR)"]),
        ("yaml scope of no model", [*d, *run, "--config_files", str(root / "noscope.yaml")],
         ["config file", "noscope.yaml, line 'BRP.learning_rate': unknown model 'BRP'"]),
        ("no dataset folder", ["-d", "nosuch", f"--data_path={data}", *run],
         ["dataset 'nosuch' not found", "set --data_path"]),
        ("no .inter file", ["-d", "nointer", f"--data_path={data}", *run], ["nointer.inter is missing"]),
        ("empty .inter", ["-d", "empty", f"--data_path={data}", *run], ["empty.inter is empty"]),
        ("header only", ["-d", "headeronly", f"--data_path={data}", *run], ["has a header but no interactions"]),
        ("wrong separator", ["-d", "commas", f"--data_path={data}", *run],
         ["commas.inter line 1", "is not 'name:type'"]),
        ("missing field", ["-d", "shortline", f"--data_path={data}", *run],
         ["shortline.inter line 32: 2 fields, the header has 4"]),
        ("no item column", ["-d", "noitem", f"--data_path={data}", *run], ["no item_id column (the ITEM_ID_FIELD)"]),
        ("no validation items", ["-d", "single", f"--data_path={data}", *run],
         ["leaves no validation interactions", "too few interactions"]),
        ("output not writable", [*d, *run, "--output", str(blocker / "out")],
         ["is not writable", "is not a directory", "choose another with --output"]),
        ("export without --load", [*d, "--export_topk", "5"], ["--load and --export_topk go together"]),
        ("no saved model", [*d, "--load", str(root / "none.pth"), "--export_topk", "5"], ["no saved model at"]),
    ]


def _movielens_cases(root):
    """MovieLens archives: each gets a fresh data folder (conversion writes there)."""
    return [
        ("truncated zip", "truncated.zip", ["truncated.zip is not a valid zip archive", "download"]),
        ("tab-separated ratings.dat", "tabs.dat", ["line 1: expected 4 fields separated by '::'", "tab-separated"]),
        ("non-numeric user id", "ids.dat", ["line 1: the user id 'u1' is not an integer"]),
        ("empty ratings.dat", "blank.dat", ["blank.dat has no ratings"]),
        ("archive missing", "missing.zip", ["the archive", "missing.zip does not exist"]),
    ]


def _check_one_line(code, err, expected):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(bad_data, tmp_path, capsys, monkeypatch):
    from recbole_hetcomp.run import pipeline, teachers

    # validation happens before any training: a teacher or model that starts training fails the test
    monkeypatch.setattr(teachers, "train_model", lambda *a, **k: pytest.fail("trained despite bad input"))
    monkeypatch.setattr(pipeline, "train_model", lambda *a, **k: pytest.fail("trained despite bad input"))
    root, data, blocker = bad_data
    for name, argv, expected in _case(root, data, blocker):
        before = _snapshot(tmp_path, root)
        out, store = tmp_path / "out", tmp_path / "store"
        extra = [] if "--output" in argv else ["--output", str(out)]
        try:
            code = cli.main([*argv, *extra, f"--trajectory_store={store}", *QUIET_ARGS])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        _check_one_line(code, capsys.readouterr().err, expected)
        assert _snapshot(tmp_path, root) == before, name
        assert not out.exists() and not store.exists(), name


def test_bad_movielens_archives_are_one_line_and_leave_no_inter(bad_data, tmp_path, capsys):
    root, _, _ = bad_data
    for name, archive, expected in _movielens_cases(root):
        data = tmp_path / name.replace(" ", "_")
        code = cli.main(["-d", "ml-1m", f"--data_path={data}", "--archive", str(root / archive), "--teachers", "BPR",
                         "--output", str(tmp_path / "out"), f"--trajectory_store={tmp_path / 'store'}",
                         "--dataset_download=False", *QUIET_ARGS])
        _check_one_line(code, capsys.readouterr().err, expected)
        assert not list(data.rglob("*.inter")) and not list(data.rglob("*.tmp")), name
        assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists(), name


def test_a_float_column_that_is_loaded_must_hold_numbers(bad_data, tmp_path, capsys):
    _, data, _ = bad_data
    argv = ["-d", "badfloat", f"--data_path={data}", "--teachers", "BPR", "--output", str(tmp_path / "out"),
            '--load_col={"inter": ["user_id", "item_id", "timestamp"]}', *QUIET_ARGS]
    code = cli.main(argv)
    _check_one_line(code, capsys.readouterr().err, ["badfloat.inter line 32: timestamp 'yesterday' is not a number"])


def test_bad_input_through_a_real_process(bad_data, tmp_path):
    """The real exit status and stderr: one line, no traceback (even RecBole's warnings stay quiet);
    with --debug the exception propagates (a traceback)."""
    root, data, _ = bad_data
    base = [sys.executable, str(CLI), "-d", "synth", f"--data_path={data}", "--output", str(tmp_path / "out"),
            *QUIET_ARGS]
    for extra, expected in ((["--teachers", "BPR,LigthGCN"], "unknown model 'LigthGCN'"),
                            (["--teachers", "BPR", "--hetcomp_k=500", "--trajectory_top_n=30"], "hetcomp_k=500")):
        proc = subprocess.run([*base, *extra], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and expected in proc.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown model 'LigthGCN'"):  # --debug: the exception itself
        cli.main(["-d", "synth", f"--data_path={data}", "--teachers", "BPR,LigthGCN", "--debug", *QUIET_ARGS])


def test_an_unexpected_error_is_one_line_with_status_1_and_debug_raises(synth, capsys, monkeypatch):
    from recbole_hetcomp.run import pipeline

    def bug(*a, **k):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'\n  (second line)")

    monkeypatch.setattr(pipeline, "run_pipeline", bug)
    data_path, name = synth
    assert cli.main(["-d", name, f"--data_path={data_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unexpected TypeError: unsupported operand type(s) for +: 'int' and 'str' (second line) "
                   "(run again with --debug for the traceback, and report it)"]
    with pytest.raises(TypeError):
        cli.main(["-d", name, f"--data_path={data_path}", "--debug"])


def test_users_without_validation_items_are_counted_and_the_run_goes_on(tmp_path):
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.data.checks import split_coverage
    from recbole_hetcomp.run.training import load_data

    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    rng = np.random.default_rng(0)
    lines = [header]
    for u in range(40):  # odd users have 2 interactions: one for training, one for test, none for validation
        for i in rng.choice(60, 2 if u % 2 else 15, replace=False):
            lines.append(f"u{u}\ti{i}\t1.0\t{u * 100 + i}.0")
    _write(tmp_path / "data" / "sparse" / "sparse.inter", "\n".join(lines) + "\n")
    data = load_data(make_config("BPR", "sparse", config_dict={"data_path": str(tmp_path / "data"), "state": "ERROR"}))
    assert split_coverage(data) == (40, 20, 0)


# ----------------------------------------------------------------------------- damaged stores


@pytest.fixture(scope="module")
def stored_bpr(synth_shared, tmp_path_factory):
    """A store with one BPR teacher, built by the command line; returns (argv, store root, teacher dir)."""
    data_path, name = synth_shared
    root = tmp_path_factory.mktemp("stored_bpr")
    argv = ["-d", name, f"--data_path={data_path}", "--teachers", "BPR", "--no_student", *SMALL_ARGS, *QUIET_ARGS]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli.main([*argv, f"--trajectory_store={root / 'store'}", "--output", str(root / "out")]) == 0
    finally:
        os.chdir(cwd)
    (teacher_dir,) = (root / "store" / name).glob("BPR-*")
    return argv, root / "store", teacher_dir


DAMAGE = {name: (STORE_DAMAGE[name], message) for name, message in {
    "truncated top.npy": "top.npy is damaged (checksum mismatch)",
    "tampered top.npy": "top.npy is damaged (checksum mismatch)",
    "missing obs_items.npy": "obs_items.npy is missing",
    "truncated meta.json": "meta.json is unreadable",
    "another split": "was built on another data split",
    "another dataset": "belongs to dataset 'ml-1m', not 'synth'",
    "old format version": "has format version 0, this code reads version 1",
}.items()}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_named_and_rebuild_teachers_recovers(stored_bpr, tmp_path, capsys, damage):
    argv, store_root, teacher_dir = stored_bpr
    store = tmp_path / "store"
    shutil.copytree(store_root, store)
    folder = store / teacher_dir.parent.name / teacher_dir.name
    spoil, expected = DAMAGE[damage]
    spoil(folder)
    run = [*argv, f"--trajectory_store={store}", "--output", str(tmp_path / "out")]
    code = cli.main(run)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert expected in err[0] and str(folder) in err[0] and "--rebuild_teachers" in err[0]
    assert cli.main([*run, "--rebuild_teachers"]) == 0
    capsys.readouterr()
    assert cli.main(run) == 0  # and the rebuilt store is sound and re-used
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert rows[0]["reused"] is True
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # nothing left aside


def test_a_damaged_store_is_named_before_any_other_teacher_trains(stored_bpr, tmp_path, capsys, monkeypatch):
    from recbole_hetcomp.run import teachers

    argv, store_root, teacher_dir = stored_bpr
    store = tmp_path / "store"
    shutil.copytree(store_root, store)
    STORE_DAMAGE["tampered top.npy"](store / teacher_dir.parent.name / teacher_dir.name)
    monkeypatch.setattr(teachers, "train_model", lambda *a, **k: pytest.fail("EASE trained before the check"))
    argv = [a if a != "BPR" else "EASE,BPR" for a in argv]  # EASE is not stored: it would train first
    code = cli.main([*argv, f"--trajectory_store={store}", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "top.npy is damaged" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_store_directory_without_meta_is_rebuilt_in_place(stored_bpr, tmp_path):
    """A directory under the final name that save() never completed (meta.json gone) is not a store:
    the teacher is trained again and the directory replaced."""
    argv, store_root, teacher_dir = stored_bpr
    store = tmp_path / "store"
    shutil.copytree(store_root, store)
    folder = store / teacher_dir.parent.name / teacher_dir.name
    (folder / "meta.json").unlink()
    assert cli.main([*argv, f"--trajectory_store={store}", "--output", str(tmp_path / "out")]) == 0
    assert (folder / "meta.json").is_file() and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


# ----------------------------------------------------------------------------- temporary directories


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_directories_of_dead_processes_are_removed_and_no_others(tmp_path):
    store = TrajectoryStore(tmp_path / "store")
    folder = tmp_path / "store" / "synth"
    folder.mkdir(parents=True)
    dead = _dead_pid()
    tag = owner_tag()  # pid<this pid>-h<this host>
    host = tag.split("-h")[1]
    live_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {  # name: kept
            f".train-BPR-pid{dead}-h{host}-abc": False,                   # dead process of this host: removed
            f".BPR-0123456789abcdef.pid{dead}-h{host}-xyz": False,        # its half-saved store
            f".BPR-0123456789abcdef.old-pid{dead}-h{host}": False,        # its store moved aside by a rebuild
            f".train-EASE-{tag}-mine": True,                              # this very process
            f".train-EASE-pid{live_child.pid}-h{host}-live": True,        # a live process
            f".train-EASE-pid{dead}-h{'0' if host[0] != '0' else '1'}{host[1:]}-far": True,  # another host
            ".train-EASE-k2j3h4": True,                                   # no owner (an older version)
            "BPR-0123456789abcdef": True,                                 # a finished store
        }
        for name in names:
            (folder / name).mkdir()
            (folder / name / "file").write_text("x")
        removed = store.clean_stale("synth")
        assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
        assert sorted(p.name for p in folder.iterdir()) == sorted(n for n, keep in names.items() if keep)
        assert not stale_owner(f".train-EASE-pid{live_child.pid}-h{host}-live")
    finally:
        live_child.kill()
        live_child.wait()


def _toy_traj(seed):
    import torch

    from recbole_hetcomp.trajectories.store import Trajectory

    g = torch.Generator().manual_seed(seed)
    top = torch.randint(1, 50, (2, 4, 3), generator=g, dtype=torch.int32)
    indptr = torch.tensor([0, 1, 2, 3, 4])
    return Trajectory("BPR", top, torch.arange(4, dtype=torch.int32), indptr, {"split_fingerprint": "fp"})


def test_an_interruption_inside_mkdtemp_leaves_no_temporary_directory(tmp_path, monkeypatch):
    import recbole_hetcomp.trajectories.store as store_mod

    real = store_mod.tempfile.mkdtemp

    def mkdtemp_then_ctrl_c(*a, **k):
        real(*a, **k)  # the directory exists, its name never reaches the caller
        raise KeyboardInterrupt

    store = TrajectoryStore(tmp_path)
    monkeypatch.setattr(store_mod.tempfile, "mkdtemp", mkdtemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        store.save("synth", "0123456789abcdef", _toy_traj(0))
    assert os.listdir(tmp_path / "synth") == []


def test_an_interrupted_rebuild_keeps_the_previous_store(tmp_path, monkeypatch):
    import torch

    import recbole_hetcomp.trajectories.store as store_mod

    store = TrajectoryStore(tmp_path)
    key = "0123456789abcdef"
    store.save("synth", key, _toy_traj(0))
    real, calls = os.rename, []

    def rename(src, dst):  # the old store is moved aside, then Ctrl-C before the new one is in place
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(store_mod.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        store.save("synth", key, _toy_traj(1), replace=True)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "synth") == [f"BPR-{key}"]
    assert torch.equal(store.load("synth", "BPR", key, "fp").top, _toy_traj(0).top)


def test_an_interrupted_teacher_leaves_no_temporary_directory(synth, tmp_path, capsys, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the second teacher: exit 130, one line naming what is stored,
    the first teacher kept, no temporary directory, no results."""
    from recbole_hetcomp.run import teachers

    real = teachers.train_model

    def train(data, workdir, *a, **k):
        if data.config["model"] == "EASE":
            assert Path(workdir).name.startswith(".train-EASE-") and Path(workdir).is_dir()
            raise KeyboardInterrupt
        return real(data, workdir, *a, **k)

    monkeypatch.setattr(teachers, "train_model", train)
    data_path, name = synth
    store = tmp_path / "store"
    code = cli.main(["-d", name, f"--data_path={data_path}", "--teachers", "BPR,EASE", f"--trajectory_store={store}",
                     "--output", str(tmp_path / "out"), *SMALL_ARGS, *QUIET_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err == ["interrupted: 1 of 2 teachers is stored (BPR); run the same command again to resume"]
    assert [p.name.split("-")[0] for p in (store / name).iterdir()] == ["BPR"]
    assert not (tmp_path / "out" / "results.json").exists()


def test_interrupting_the_student_keeps_every_teacher_intact(synth, tmp_path, capsys, monkeypatch):
    from recbole_hetcomp.run import pipeline
    from recbole_hetcomp.trajectories.store import TrajectoryStore as Store

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_model", interrupted)
    data_path, name = synth
    store = tmp_path / "store"
    argv = ["-d", name, f"--data_path={data_path}", "--teachers", "BPR,EASE", f"--trajectory_store={store}",
            "--output", str(tmp_path / "out"), *SMALL_ARGS, *QUIET_ARGS]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted: 2 of 2 teachers are stored (BPR, EASE); run the same command again to resume"]
    dirs = sorted(d for d in (store / name).iterdir() if d.name != "fits")
    assert [d.name.split("-")[0] for d in dirs] == ["BPR", "EASE"]
    assert [f.name[:4] for f in (store / name / "fits").iterdir()] == ["fit-"]  # the ensemble's fit, complete
    for d in dirs:
        teacher, key = d.name.split("-", 1)
        Store(store).load(name, teacher, key)  # checksums and shapes verified
    monkeypatch.undo()
    assert cli.main(argv) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["reused"] for r in rows[:2]] == [True, True]


# ----------------------------------------------------------------------------- real signals


def _env():
    # the same torch threads in every process, so that runs compare exactly
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # even when the test runner was started with SIGINT ignored


def _kill_run_argv(data_path, name, workdir):
    # BPR trains in a moment; LightGCN (150 evaluated epochs, no early stop) long enough to be caught training
    return [sys.executable, str(CLI), "-d", name, f"--data_path={data_path}", "--teachers", "BPR,LightGCN",
            f"--trajectory_store={workdir / 'store'}", "--output", str(workdir / "out"), "--epochs=3",
            "--LightGCN.epochs=150", "--LightGCN.stopping_step=1000", "--trajectory_top_n=30", "--hetcomp_k=20",
            "--hetcomp_p=5", "--dkc_k=10", *QUIET_ARGS]


def _run(argv, cwd, timeout=120):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((cwd / "out" / "results.json").read_text())["rows"]


def _start_and_catch_second_teacher(argv, cwd, store, timeout=90):
    """Start the CLI and return it once BPR is stored and LightGCN is training (its .train- directory
    exists): polled, not timed."""
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=_env(), preexec_fn=_default_sigint)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before LightGCN was caught training: "
                        + (cwd / "stderr.txt").read_text()[-2000:])
        if glob.glob(str(store / "*" / "BPR-*" / "meta.json")) and glob.glob(str(store / "*" / ".train-LightGCN-*")):
            return proc
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    pytest.fail("LightGCN never started training")


def _metrics(rows):
    return [(r["name"], r["kind"], r["params"], r["test"], r["valid"]) for r in rows]


def test_sigkill_while_the_second_teacher_trains_then_resume_gives_the_uninterrupted_results(synth, tmp_path):
    data_path, name = synth
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    reference.mkdir()
    crashed.mkdir()
    expected = _run(_kill_run_argv(data_path, name, reference), reference)

    argv = _kill_run_argv(data_path, name, crashed)
    store = crashed / "store" / name
    proc = _start_and_catch_second_teacher(argv, crashed, crashed / "store")
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    (bpr,) = store.glob("BPR-*")
    bpr_meta = (bpr / "meta.json").stat()
    leftovers = [p.name for p in store.glob(".train-LightGCN-*")]
    assert leftovers and not list(store.glob("LightGCN-*")), "killed after LightGCN finished: not mid-training"

    rows = _run(argv, crashed)
    assert [(r["name"], r.get("reused")) for r in rows[:2]] == [("BPR", True), ("LightGCN", False)]
    assert (bpr / "meta.json").stat().st_mtime_ns == bpr_meta.st_mtime_ns  # re-used, not rewritten
    teachers = sorted(p.name.split("-")[0] for p in store.iterdir() if p.name != "fits")
    assert teachers == ["BPR", "LightGCN"]  # the dead run's dir is gone
    assert _metrics(rows) == _metrics(expected)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_while_a_teacher_trains_is_one_line_and_cleans_up(synth, tmp_path, sig, status):
    data_path, name = synth
    argv = [*_kill_run_argv(data_path, name, tmp_path), "--no_student"]
    proc = _start_and_catch_second_teacher(argv, tmp_path, tmp_path / "store")
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == status
    err = (tmp_path / "stderr.txt").read_text()
    assert err == "interrupted: 1 of 2 teachers is stored (BPR); run the same command again to resume\n"
    store = tmp_path / "store" / name
    left = sorted(p.name for p in store.iterdir())
    assert [n.split("-")[0] for n in left] == ["BPR"], left  # no .train- nor partial store left
    assert not (tmp_path / "out" / "results.json").exists()


# ----------------------------------------------------------------------------- determinism


def test_two_cpu_runs_with_the_same_seed_give_identical_metrics(synth, tmp_path):
    from recbole_hetcomp.run.pipeline import run_pipeline

    data_path, name = synth
    runs = []
    for run in ("a", "b"):
        cfg = {"epochs": 3, "trajectory_top_n": 30, "hetcomp_k": 20, "hetcomp_p": 5, "dkc_k": 10, "state": "ERROR",
               "show_progress": False, "data_path": str(data_path), "trajectory_store": str(tmp_path / run / "store")}
        rows, _ = run_pipeline(name, teachers=["BPR", "EASE"], config_dict=cfg, cmd_args=["--HetComp.epochs=12"],
                               output=tmp_path / run / "out")
        assert [r.get("reused", False) for r in rows] == [False] * len(rows)
        runs.append(rows)
    assert _metrics(runs[0]) == _metrics(runs[1])


def _split_stub(config, users, valid_users, test_users):
    """What check_split and warn_uncovered read of a loaded split: users 1..users (0 pads)."""
    from types import SimpleNamespace as NS

    import pandas as pd

    phase = lambda ids: NS(_dataset=NS(inter_feat=pd.DataFrame({"user_id": ids}, dtype="int64")))  # noqa: E731
    return NS(config=config, train_dataset=NS(uid_field="user_id", user_num=users + 1),
              valid=phase(valid_users), test=phase(test_users))


def test_uncovered_users_warning_names_the_split_that_applies(caplog):
    from recbole_hetcomp.data.checks import warn_uncovered

    recbole_split = {"dataset": "ml", "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}}}
    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        assert warn_uncovered(_split_stub(recbole_split, 4, [1, 2], [1, 2, 3])) == (4, 2, 1)
    assert "2 of 4 users have no validation interaction and 1 no test interaction (too few interactions for " \
           "the split {'RS': [0.8, 0.1, 0.1]})" in caplog.text and "user_inter_num_interval" in caplog.text
    caplog.clear()
    # pre-split files (CiteULike-t): RecBole's split and filters do not apply, so neither is named
    presplit = {**recbole_split, "dataset": "citeulike-t", "benchmark_filename": ["train", "valid", "test"]}
    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        warn_uncovered(_split_stub(presplit, 4, [1, 2, 3], [1, 2, 3]))
    assert "1 of 4 users have no validation interaction and 1 no test interaction in the dataset's own split " \
           "files (benchmark_filename: ['train', 'valid', 'test'])" in caplog.text
    assert "RS" not in caplog.text and "user_inter_num_interval" not in caplog.text


def test_a_cut_off_beyond_the_teachers_lists_is_warned(caplog):
    from recbole_hetcomp.run.preflight import warn_short_lists

    with caplog.at_level("WARNING", logger="recbole_hetcomp"):
        assert warn_short_lists({"topk": [10, 20, 50]}, 100) == [] and warn_short_lists({"topk": 20}, 20) == []
        assert not caplog.text
        assert warn_short_lists({"topk": [10, 20, 50]}, 15) == [20, 50]
    assert "trajectory_top_n=15 is below topk 20, 50: the ensembles rank only the items their teachers list, so " \
           "their metrics at 20, 50 also count items in no list, in no order the teachers gave; raise " \
           "--trajectory_top_n to at least 50 for those to mean something" in caplog.text


def test_presplit_files_without_validation_rows_name_the_file():
    from recbole_hetcomp.data.checks import check_split

    presplit = {"dataset": "mine", "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}},
                "benchmark_filename": ["train", "valid", "test"]}
    with pytest.raises(ValueError, match=r"^dataset 'mine': the dataset's own split files \(benchmark_filename: "
                                         r"\['train', 'valid', 'test'\]\) hold no validation interactions; "
                                         r"add them to its \.valid\.inter file"):
        check_split(_split_stub(presplit, 3, [], [1]))
