"""Shared fixtures: an isolated working directory per test and a small synthetic dataset.

RecBole writes ``./log``, ``./log_tensorboard`` and ``./saved`` relative to the working
directory, so every test runs in its own fresh ``tmp_path``. Fixtures with a wider scope
that train or evaluate enter a directory of their own with the ``fresh_dir`` fixture.
"""

import contextlib
import json
import os

import numpy as np
import pytest
import torch

# Two cores shared with other work: torch's default thread pool spins and slows
# RecBole's training and evaluation down by an order of magnitude under contention.
torch.set_num_threads(1)

QUIET = {"show_progress": False, "state": "ERROR"}

SYNTH = "synth"
SYNTH_USERS = 60
SYNTH_ITEMS = 80
SYNTH_CLUSTERS = 4


def write_synth(data_path, name=SYNTH, n_users=SYNTH_USERS, n_items=SYNTH_ITEMS,
                n_clusters=SYNTH_CLUSTERS, seed=2023):
    """Write ``<data_path>/<name>/<name>.inter`` in RecBole's atomic format; return (data_path, name).

    User ``u`` belongs to cluster ``u % n_clusters`` and draws 15-25 distinct items, about
    80 % of them from its own cluster's block of items. Everything is seeded.
    """
    rng = np.random.default_rng(seed)
    per = n_items // n_clusters
    folder = os.path.join(str(data_path), name)
    os.makedirs(folder, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    stamp = 1_000_000
    for u in range(n_users):
        c = u % n_clusters
        n = int(rng.integers(15, 26))
        n_own = int(round(0.8 * n))
        own = np.arange(c * per, (c + 1) * per)
        other = np.setdiff1d(np.arange(n_items), own)
        items = np.concatenate([rng.choice(own, n_own, replace=False),
                                rng.choice(other, n - n_own, replace=False)])
        rng.shuffle(items)
        for i in items:
            stamp += int(rng.integers(1, 100))
            lines.append(f"u{u}\ti{i}\t{int(rng.integers(1, 6))}.0\t{stamp}.0")
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return data_path, name


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cut_after_first_line(path):
    """Keep the first line of a JSON file (its opening brace): the parse error then names the same place whatever the
    file held (a cut at half the file named a place that moved with the machine's name, so docs/errors.md did)."""
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n") + 1])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_meta(**changes):
    def edit(folder):
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(changes)
        (folder / "meta.json").write_text(json.dumps(meta))
    return edit


#: Ways to damage a stored teacher's directory (name -> function of the directory), shared by
#: tests/test_reliability.py and docs/make_errors.py.
STORE_DAMAGE = {
    "truncated top.npy": lambda d: _truncate(d / "top.npy"),
    "tampered top.npy": lambda d: _flip_last_byte(d / "top.npy"),
    "missing obs_items.npy": lambda d: (d / "obs_items.npy").unlink(),
    "truncated meta.json": lambda d: _cut_after_first_line(d / "meta.json"),
    "another split": _edit_meta(split_fingerprint="0" * 64),
    "another dataset": _edit_meta(dataset="ml-1m"),
    "old format version": _edit_meta(format_version=0),
}


@contextlib.contextmanager
def isolated_cwd(path):
    """chdir into ``path`` (and keep CUDA_VISIBLE_DEVICES, which RecBole's Config sets) for a block."""
    with pytest.MonkeyPatch.context() as mp:
        _keep_cuda_env(mp)
        mp.chdir(path)
        yield path


def _keep_cuda_env(mp):
    # RecBole's Config writes os.environ["CUDA_VISIBLE_DEVICES"]; make the change undoable.
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    mp.setenv("CUDA_VISIBLE_DEVICES", old if old is not None else "")
    if old is None:
        mp.delenv("CUDA_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def _fresh_cwd(tmp_path, monkeypatch):
    _keep_cuda_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(scope="session")
def fresh_dir(tmp_path_factory):
    """``with fresh_dir("name") as cwd:``: run a block of a wider-scoped fixture in a new directory."""
    return lambda name: isolated_cwd(tmp_path_factory.mktemp(name))


@pytest.fixture(scope="session")
def quiet():
    """Config entries that keep RecBole silent."""
    return dict(QUIET)


@pytest.fixture
def synth(tmp_path):
    """A fresh synthetic dataset for this test: (data_path, dataset name)."""
    return write_synth(tmp_path / "data")


@pytest.fixture(scope="session")
def synth_shared(tmp_path_factory):
    """The same synthetic dataset, written once per session (read-only use): (data_path, name)."""
    return write_synth(tmp_path_factory.mktemp("synth_data"))


@pytest.fixture(scope="session")
def synth_config(synth_shared):
    """``synth_config(model, **config)``: a quiet Config of ``model`` on the shared synthetic data."""
    from recbole_hetcomp.config import make_config

    data_path, name = synth_shared

    def build(model, /, cmd_args=None, config_files=None, **overrides):
        config_dict = {**QUIET, "data_path": str(data_path), **overrides}
        return make_config(model, name, config_files=config_files, config_dict=config_dict, cmd_args=cmd_args)

    return build
