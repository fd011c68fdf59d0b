"""The trajectory store: round trip, atomic writes, damage detection, keys and split fingerprints."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

import recbole_hetcomp.trajectories.store as store_mod
from recbole_hetcomp.run.teachers import fit_teacher
from recbole_hetcomp.run.training import load_data
from recbole_hetcomp.trajectories.store import (
    FORMAT_VERSION,
    StoreError,
    Trajectory,
    TrajectoryStore,
    result_config,
    split_fingerprint,
    teacher_key,
)

DS, TEACHER, KEY, FP = "toyset", "TeachA", "0123456789abcdef", "fp-abc"


def _traj(teacher=TEACHER, t=3, u=5, n=4, seed=0, indptr=(0, 2, 2, 5, 6, 8), fingerprint=FP):
    g = torch.Generator().manual_seed(seed)
    top = torch.randint(1, 50, (t, u, n), generator=g, dtype=torch.int32)
    indptr = torch.tensor(indptr, dtype=torch.int64)
    obs = torch.randint(1, 50, (int(indptr[-1]),), generator=g, dtype=torch.int32)
    return Trajectory(teacher, top, obs, indptr, {"split_fingerprint": fingerprint, "note": [1, 2]})


@pytest.fixture
def saved(tmp_path):
    store = TrajectoryStore(tmp_path / "store")
    traj = _traj()
    path = store.save(DS, KEY, traj, model_state={"w": torch.arange(3.0)})
    return store, traj, path


# ---------------------------------------------------------------------------
# Round trip and layout
# ---------------------------------------------------------------------------


def test_round_trip(saved):
    store, traj, path = saved
    got = store.load(DS, TEACHER, KEY, FP)
    assert got.teacher == TEACHER
    assert got.top.dtype == torch.int32 and got.obs_items.dtype == torch.int32
    assert got.obs_indptr.dtype == torch.int64
    assert torch.equal(got.top, traj.top)
    assert torch.equal(got.obs_items, traj.obs_items)
    assert torch.equal(got.obs_indptr, traj.obs_indptr)
    assert (got.n_points, got.n_users, got.top_n) == (3, 5, 4)
    assert got.meta["note"] == [1, 2]
    assert got.meta["split_fingerprint"] == FP
    assert got.meta["format_version"] == FORMAT_VERSION
    assert (got.meta["key"], got.meta["dataset"], got.meta["teacher"]) == (KEY, DS, TEACHER)
    assert set(got.meta["versions"]) >= {"recbole_hetcomp", "recbole", "torch", "numpy", "python", "torch_cpu_kernels"}
    assert got.meta["versions"]["torch_cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert torch.equal(store.load_model_state(DS, TEACHER, KEY)["w"], torch.arange(3.0))
    # fingerprint=None skips the split check
    assert torch.equal(store.load(DS, TEACHER, KEY).top, traj.top)


def test_round_trip_converts_dtypes(tmp_path):
    store = TrajectoryStore(tmp_path)
    t = _traj()
    wide = Trajectory(t.teacher, t.top.long(), t.obs_items.long(), t.obs_indptr.int(), t.meta)
    store.save(DS, KEY, wide)
    got = store.load(DS, TEACHER, KEY)
    assert (got.top.dtype, got.obs_items.dtype, got.obs_indptr.dtype) == (torch.int32, torch.int32, torch.int64)
    assert torch.equal(got.top, t.top)


def test_layout(saved, tmp_path):
    store, _, path = saved
    assert path == tmp_path / "store" / DS / f"{TEACHER}-{KEY}"
    assert path == store.path(DS, TEACHER, KEY)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.pth", "obs_indptr.npy", "obs_items.npy",
                                                     "top.npy"]
    # no temporary directory left beside the final one (hidden names included)
    assert os.listdir(tmp_path / "store" / DS) == [f"{TEACHER}-{KEY}"]
    assert store.exists(DS, TEACHER, KEY)
    assert not store.exists(DS, TEACHER, "ffffffffffffffff")
    assert not store.exists("otherset", TEACHER, KEY)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["files"]["top.npy"]["shape"] == [3, 5, 4]
    assert meta["files"]["top.npy"]["dtype"] == "int32"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["files"]["top.npy"]["sha256"])


def test_save_without_model(tmp_path):
    store = TrajectoryStore(tmp_path)
    path = store.save(DS, KEY, _traj())
    assert not (path / "model.pth").exists()
    assert "model.pth" not in json.loads((path / "meta.json").read_text())["files"]


def test_save_keeps_an_existing_directory(saved, tmp_path):
    store, first, path = saved
    again = store.save(DS, KEY, _traj(seed=99))
    assert again == path
    assert torch.equal(store.load(DS, TEACHER, KEY).top, first.top)
    assert os.listdir(tmp_path / "store" / DS) == [path.name]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    store = TrajectoryStore(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(DS, KEY, _traj())
    assert os.listdir(tmp_path / DS) == []
    assert not store.exists(DS, TEACHER, KEY)


def test_two_teachers_side_by_side(tmp_path):
    store = TrajectoryStore(tmp_path)
    a, b = _traj("A", seed=1), _traj("B", seed=2)
    store.save(DS, KEY, a)
    store.save(DS, KEY, b)
    assert sorted(os.listdir(tmp_path / DS)) == [f"A-{KEY}", f"B-{KEY}"]
    assert torch.equal(store.load(DS, "A", KEY).top, a.top)
    assert torch.equal(store.load(DS, "B", KEY).top, b.top)


# ---------------------------------------------------------------------------
# Damage and mismatch detection
# ---------------------------------------------------------------------------


def _flip_last_byte(file):
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01
    file.write_bytes(bytes(data))


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def _damage(kind, path):
    if kind == "flip_top":
        _flip_last_byte(path / "top.npy")
        return ["top.npy", "damaged"]
    if kind == "flip_indptr":
        _flip_last_byte(path / "obs_indptr.npy")
        return ["obs_indptr.npy", "damaged"]
    if kind == "delete_obs":
        (path / "obs_items.npy").unlink()
        return ["obs_items.npy", "missing"]
    if kind == "unlisted_file":
        meta = json.loads((path / "meta.json").read_text())
        del meta["files"]["top.npy"]
        (path / "meta.json").write_text(json.dumps(meta))
        return ["top.npy", "missing"]
    if kind == "garble_meta":
        (path / "meta.json").write_text('{"format_version": 1, "key": ')
        return ["meta.json", "unreadable"]
    if kind == "version":
        _edit_meta(path, format_version=FORMAT_VERSION + 1)
        return ["version", str(FORMAT_VERSION + 1)]
    if kind == "reshaped":
        # consistent checksum, but not the shape meta.json promises
        arr = np.load(path / "top.npy")
        np.save(path / "top.npy", arr.reshape(arr.shape[0], -1))
        meta = json.loads((path / "meta.json").read_text())
        meta["files"]["top.npy"]["sha256"] = store_mod._sha256(path / "top.npy")
        (path / "meta.json").write_text(json.dumps(meta))
        return ["top.npy", "shape"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["flip_top", "flip_indptr", "delete_obs", "unlisted_file", "garble_meta",
                                  "version", "reshaped"])
def test_damage_is_detected_and_named(saved, kind):
    store, _, path = saved
    words = _damage(kind, path)
    with pytest.raises(StoreError) as err:
        store.load(DS, TEACHER, KEY, FP)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "--rebuild_teachers" in msg
    assert str(path) in msg


def test_other_split_is_detected(saved):
    store, _, path = saved
    with pytest.raises(StoreError, match="another data split") as err:
        store.load(DS, TEACHER, KEY, "fp-other")
    assert "--rebuild_teachers" in str(err.value)


def test_directory_of_another_key_or_teacher_is_refused(saved):
    store, _, path = saved
    other_key = "fedcba9876543210"
    shutil.copytree(path, store.path(DS, TEACHER, other_key))
    with pytest.raises(StoreError, match=f"belongs to key '{KEY}', not '{other_key}'") as err:
        store.load(DS, TEACHER, other_key, FP)
    assert "--rebuild_teachers" in str(err.value)
    shutil.copytree(path, store.path(DS, "TeachB", KEY))
    with pytest.raises(StoreError, match=f"belongs to teacher '{TEACHER}', not 'TeachB'") as err:
        store.load(DS, "TeachB", KEY, FP)
    assert "--rebuild_teachers" in str(err.value)
    shutil.copytree(path, store.path("otherset", TEACHER, KEY))
    with pytest.raises(StoreError, match=f"belongs to dataset '{DS}', not 'otherset'"):
        store.load("otherset", TEACHER, KEY, FP)


def test_missing_store(saved):
    store, _, _ = saved
    with pytest.raises(StoreError, match="no trajectory store for teacher TeachA"):
        store.load(DS, TEACHER, "ffffffffffffffff", FP)
    with pytest.raises(StoreError, match="no trajectory store for teacher Nobody"):
        store.load(DS, "Nobody", KEY, FP)


def test_indptr_not_matching_users_is_refused(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.save(DS, KEY, _traj(indptr=(0, 1, 2, 3)))  # 3 rows for 5 users
    with pytest.raises(StoreError, match="obs_indptr does not match 5 users") as err:
        store.load(DS, TEACHER, KEY, FP)
    assert "--rebuild_teachers" in str(err.value)


# ---------------------------------------------------------------------------
# Size: O(T x U x N + nnz), never O(U x I)
# ---------------------------------------------------------------------------


def test_size_is_linear_in_the_lists(tmp_path):
    t_, u, n, n_items, per_user = 4, 1000, 50, 5000, 20
    g = torch.Generator().manual_seed(0)
    top = torch.randint(1, n_items, (t_, u, n), generator=g, dtype=torch.int32)
    indptr = torch.arange(0, (u + 1) * per_user, per_user, dtype=torch.int64)
    nnz = int(indptr[-1])
    obs = torch.randint(1, n_items, (nnz,), generator=g, dtype=torch.int32)
    store = TrajectoryStore(tmp_path)
    store.save(DS, KEY, Trajectory(TEACHER, top, obs, indptr, {}), model_state={"w": torch.zeros(u + n_items, 64)})
    size = store.size_bytes(DS, TEACHER, KEY)
    arrays = u * n * t_ * 4 + nnz * 4 + (u + 1) * 8
    assert arrays <= size < arrays + 4096
    assert size < u * n_items * 4 * t_ / 50
    with_model = store.size_bytes(DS, TEACHER, KEY, include_model=True)
    assert with_model - size >= (u + n_items) * 64 * 4


# ---------------------------------------------------------------------------
# teacher_key and split_fingerprint on the synthetic dataset
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_fp(synth_config, fresh_dir):
    with fresh_dir("fp_cwd"):
        data = load_data(synth_config("BPR"))
    return data


def test_synth_split_gives_every_user_valid_and_test_items(synth_fp):
    data = synth_fp
    n_users = data.train_dataset.user_num
    assert n_users == 61  # 60 users and RecBole's padding id 0
    assert data.train_dataset.item_num == 81  # 80 items and the padding id 0
    for part in (data.train._dataset, data.valid._dataset, data.test._dataset):
        users = set(part.inter_feat[part.uid_field].tolist())
        assert users == set(range(1, n_users))
    # per user: 80 / 10 / 10 by ratio, so train dominates
    assert len(data.train._dataset) > 7 * len(data.test._dataset)


def test_synth_users_prefer_their_cluster(synth_fp):
    ds = synth_fp.dataset
    users = ds.id2token(ds.uid_field, ds.inter_feat[ds.uid_field].numpy())
    items = ds.id2token(ds.iid_field, ds.inter_feat[ds.iid_field].numpy())
    same = [int(u[1:]) % 4 == int(i[1:]) // 20 for u, i in zip(users, items)]
    assert 0.75 < np.mean(same) < 0.85
    assert len(ds) == len(set(zip(users, items)))  # no duplicate interactions


def test_teacher_key_is_a_stable_hash(synth_config, synth_fp):
    k1 = teacher_key(synth_config("BPR"), synth_fp.fingerprint)
    k2 = teacher_key(synth_config("BPR"), synth_fp.fingerprint)
    assert k1 == k2
    assert re.fullmatch(r"[0-9a-f]{16}", k1)


@pytest.mark.parametrize("change", [
    {"learning_rate": 0.01}, {"embedding_size": 32}, {"seed": 7}, {"epochs": 11}, {"train_batch_size": 512},
    {"trajectory_top_n": 50}, {"trajectory_milestones": [0.5, 1.0]}, {"valid_metric": "NDCG@10"},
])
def test_teacher_key_changes_with_result_relevant_settings(synth_config, synth_fp, change):
    base = teacher_key(synth_config("BPR"), synth_fp.fingerprint)
    assert teacher_key(synth_config("BPR", **change), synth_fp.fingerprint) != base


def test_teacher_key_changes_with_model_split_and_extra(synth_config, synth_fp):
    cfg = synth_config("BPR")
    base = teacher_key(cfg, synth_fp.fingerprint)
    assert teacher_key(synth_config("CML"), synth_fp.fingerprint) != base
    assert teacher_key(cfg, "0" * 64) != base
    assert teacher_key(cfg, synth_fp.fingerprint, extra={"x": 1}) != base


@pytest.mark.parametrize("change", [
    {"gpu_id": ""}, {"checkpoint_dir": "elsewhere"}, {"show_progress": True}, {"state": "INFO"},
    {"trajectory_store": "other_store"}, {"eval_batch_size": 999}, {"teacher_weights": {"BPR": 2.0}},
    {"teachers": ["BPR"]}, {"ensemble_tau": 3.0}, {"ensemble_fit": False}, {"ensemble_fit_method": "coordinate"},
    {"ensemble_fit_grid": {"exp": [1.0]}}, {"ensemble_fit_max_steps": 3}, {"ensemble_fit_method": "bagged"},
    {"ensemble_fit_bags": 3},
])
def test_teacher_key_ignores_where_and_how_verbosely(synth_config, synth_fp, change):
    base = teacher_key(synth_config("BPR"), synth_fp.fingerprint)
    assert teacher_key(synth_config("BPR", **change), synth_fp.fingerprint) == base


def test_teacher_key_ignores_the_data_path_and_later_edits_of_checkpoint_dir(synth_config, synth_fp, synth):
    base = teacher_key(synth_config("BPR"), synth_fp.fingerprint)
    cfg = synth_config("BPR", data_path=str(synth[0]))  # a copy of the same files elsewhere
    assert teacher_key(cfg, synth_fp.fingerprint) == base
    cfg["checkpoint_dir"] = "/somewhere/else"  # what fit_teacher does before training
    assert teacher_key(cfg, synth_fp.fingerprint) == base


def test_result_config_drops_non_result_keys(synth_config):
    rc = result_config(synth_config("BPR"))
    assert "learning_rate" in rc and "seed" in rc and "model" in rc
    for k in ("gpu_id", "device", "checkpoint_dir", "show_progress", "data_path", "trajectory_store"):
        assert k not in rc
    assert list(rc) == sorted(rc)


def test_split_fingerprint(synth_config, synth_fp):
    fp = synth_fp.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    again = load_data(synth_config("BPR"))
    assert again.fingerprint == fp
    assert split_fingerprint(again.train._dataset, again.valid._dataset, again.test._dataset) == fp
    # the model does not enter the split
    assert load_data(synth_config("EASE")).fingerprint == fp
    assert load_data(synth_config("BPR", seed=7)).fingerprint != fp
    ratio = {"split": {"RS": [0.7, 0.15, 0.15]}, "group_by": "user", "order": "RO", "mode": "full"}
    assert load_data(synth_config("BPR", eval_args=ratio)).fingerprint != fp


def test_split_fingerprint_sees_token_changes(synth_config, synth_fp, synth):
    # same interactions, one user renamed: internal ids are unchanged but tokens are not
    data_path, name = synth
    f = data_path / name / f"{name}.inter"
    f.write_text(f.read_text().replace("u0\t", "user0\t"))
    renamed = load_data(synth_config("BPR", data_path=str(data_path)))
    assert len(renamed.dataset) == len(synth_fp.dataset)
    assert renamed.fingerprint != synth_fp.fingerprint


# ---------------------------------------------------------------------------
# A key must imply a result: metric rounding drives early stopping and milestones
# ---------------------------------------------------------------------------

ROUNDING_RUN = dict(epochs=4, eval_step=1, learning_rate=0.01, valid_metric="Recall@10", trajectory_top_n=10)


@pytest.fixture(scope="module")
def rounding_runs(synth_config, fresh_dir):
    """The same BPR teacher trained with metric_decimal_place 4 and 0 (0: every score rounds to 0.0)."""
    out = {}
    with fresh_dir("rounding_cwd") as cwd:
        for places in (4, 0):
            data = load_data(synth_config("BPR", metric_decimal_place=places, **ROUNDING_RUN))
            traj = fit_teacher(data, TrajectoryStore(cwd / f"store{places}"))
            out[places] = (data, traj)
    return out


def test_metric_decimal_place_changes_the_trajectory(rounding_runs):
    (_, t4), (_, t0) = rounding_runs[4], rounding_runs[0]
    s4 = t4.meta["valid_curve"]["scores"]
    assert t0.meta["valid_curve"]["scores"] == [0.0] * 4
    # with 4 places the best evaluation is not the last; with 0 all tie and RecBole keeps the last
    assert s4.index(max(s4)) < 3
    assert not torch.equal(t4.top[-1], t0.top[-1])


def test_metric_decimal_place_changes_the_key(rounding_runs):
    (d4, _), (d0, _) = rounding_runs[4], rounding_runs[0]
    assert teacher_key(d4.config, d4.fingerprint) != teacher_key(d0.config, d0.fingerprint)


def test_load_maps_the_arrays_and_keeps_writes_private(saved):
    store, traj, path = saved
    got = store.load(DS, TEACHER, KEY, FP)
    maps = [line.split() for line in open("/proc/self/maps") if line.rstrip().endswith(str(path / "top.npy"))]
    spans = [tuple(int(x, 16) for x in fields[0].split("-")) for fields in maps]
    assert any(a <= got.top.data_ptr() < b for a, b in spans)  # the tensor's memory is the file's mapping
    before = (path / "top.npy").read_bytes()
    got.top[0, 0, 0] = 49  # copy-on-write: this process's copy changes, the file does not
    assert (path / "top.npy").read_bytes() == before
    assert torch.equal(store.load(DS, TEACHER, KEY, FP).top, traj.top)
