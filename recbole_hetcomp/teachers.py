"""Teachers: train (or re-use from the store) each teacher with its trajectory, and evaluate the ensemble.

This is the library's entry point for the foundation:

    data = load_data(make_config("BPR", "ml-100k"))
    traj = fit_teacher(data, TrajectoryStore("trajectories"))
"""

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_hetcomp.config import Config
from recbole_hetcomp.inference import full_ranking_ms_per_1k_users
from recbole_hetcomp.movielens import ensure_dataset
from recbole_hetcomp.store import Trajectory, split_fingerprint, teacher_key
from recbole_hetcomp.trajectory import TrajectoryRecorder, check_milestones
from recbole_hetcomp.trainer import trajectory_trainer
from recbole_hetcomp.utils import count_parameters, get_model, get_trainer, is_general_model

logger = logging.getLogger("recbole_hetcomp")


def make_config(model, dataset, config_files=None, config_dict=None, cmd_args=None):
    """A :class:`~recbole_hetcomp.config.Config` for ``model`` on ``dataset``."""
    return Config(model=model, dataset=dataset, config_file_list=config_files or None,
                  config_dict=config_dict or None, cmd_args=cmd_args)


@dataclass
class Data:
    """A config with its dataset, the three data loaders and the split's fingerprint."""

    config: object
    dataset: object
    train: object
    valid: object
    test: object
    fingerprint: str = field(default="")

    @property
    def train_dataset(self):
        return self.train._dataset


def load_data(config):
    """Build dataset and split exactly as RecBole's ``run_recbole`` does, seeded the same way.

    A MovieLens dataset whose atomic files are missing is first converted from the official
    GroupLens archive (``dataset_archive``, a local copy, or a download): see
    :mod:`recbole_hetcomp.movielens`.
    """
    data_root = os.path.dirname(os.path.normpath(config["data_path"]))
    ensure_dataset(config["dataset"], data_root, archive=config["dataset_archive"],
                   download=config["dataset_download"] is not False)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    fingerprint = split_fingerprint(train._dataset, valid._dataset, test._dataset)
    return Data(config, dataset, train, valid, test, fingerprint)


def _check_teacher(config, train_dataset):
    name = config["model"]
    if not is_general_model(get_model(name)):
        raise ValueError(f"teacher '{name}' is not a general recommender (it must rank all items for a user): "
                         "choose e.g. BPR, LightGCN, NeuMF, MultiVAE, EASE or CML")
    if not config["valid_metric_bigger"]:
        raise ValueError(f"valid_metric {config['valid_metric']} is smaller-is-better; trajectory milestones "
                         "need a ranking metric such as Recall@50")
    check_milestones(config["trajectory_milestones"])
    top_n = config["trajectory_top_n"]
    max_train = int(np.diff(train_dataset.inter_matrix(form="csr").indptr).max())
    room = train_dataset.item_num - 1 - max_train
    if not isinstance(top_n, int) or top_n < 1 or top_n > room:
        raise ValueError(f"trajectory_top_n={top_n} must be an integer in [1, {room}] on this dataset "
                         f"({train_dataset.item_num - 1} items, a user with {max_train} training items)")


def fit_teacher(data, store, rebuild=False):
    """Return the teacher's trajectory: from ``store`` if present and valid, else trained now.

    ``data`` is the teacher's own :class:`Data` (its config names the teacher model). The
    teacher trains exactly as RecBole would, in a private checkpoint directory; its
    trajectory (and weights) are then written atomically to the store.
    """
    config, name = data.config, data.config["model"]
    dataset_name = config["dataset"]
    _check_teacher(config, data.train_dataset)
    key = teacher_key(config, data.fingerprint)
    if store.exists(dataset_name, name, key) and not rebuild:
        traj = store.load(dataset_name, name, key, data.fingerprint)
        traj.meta["reused"] = True
        logger.info(f"teacher {name}: re-using trajectory {store.path(dataset_name, name, key)}")
        return traj

    (store.root / dataset_name).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".train-{name}-", dir=store.root / dataset_name))
    try:
        config["checkpoint_dir"] = str(workdir)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = get_model(name)(config, data.train_dataset).to(config["device"])
        trainer = trajectory_trainer(get_trainer(config["MODEL_TYPE"], name))(config, model)
        trainer.recorder = TrajectoryRecorder(data.train_dataset.user_num, config["trajectory_top_n"],
                                              config["trajectory_milestones"])
        start = time.time()
        best_score, best_valid = trainer.fit(data.train, data.valid, saved=True,
                                             show_progress=config["show_progress"])
        train_s = time.time() - start
        test_result = trainer.evaluate(data.test, load_best_model=True)
        final_top, obs_items, obs_indptr = trainer.rank_all_users(data.train_dataset, config["trajectory_top_n"])
        points, chosen = trainer.recorder.points(final_top)
        infer_ms = full_ranking_ms_per_1k_users(trainer, data.train_dataset)
        rec = trainer.recorder
        meta = {
            "split_fingerprint": data.fingerprint,
            "milestones": rec.fractions,
            "milestone_epochs": [rec.epochs[i] for i in chosen],
            "milestone_valid_scores": [rec.scores[i] for i in chosen],
            "valid_curve": {"epochs": rec.epochs, "scores": rec.scores},
            "valid_metric": config["valid_metric"],
            "best_valid_score": float(best_score),
            "valid": dict(best_valid or {}),
            "test": dict(test_result or {}),
            "params": count_parameters(model),
            "infer_ms_per_1k_users": infer_ms,
            "train_s": train_s,
            "n_users": data.train_dataset.user_num,
            "n_items": data.train_dataset.item_num,
            "config": {k: v for k, v in sorted(config.final_config_dict.items())},
        }
        traj = Trajectory(name, points, obs_items, obs_indptr, meta)
        state = {"state_dict": model.state_dict(), "other_parameter": model.other_parameter()}
        store.save(dataset_name, key, traj, model_state=state, replace=rebuild)
        traj.meta["reused"] = False
        logger.info(f"teacher {name}: test {dict(test_result)}; points at epochs {meta['milestone_epochs']}")
        return traj
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def evaluate_model(model, data, phases=("valid", "test"), timing=False):
    """RecBole's evaluation of an already-built ``model`` on ``data``'s loaders (no training).
    With ``timing``, also ``infer_ms_per_1k_users`` (full ranking of every user)."""
    from recbole.trainer import Trainer

    trainer = Trainer(data.config, model)
    out = {phase: dict(trainer.evaluate(getattr(data, phase), load_best_model=False)) for phase in phases}
    if timing:
        out["infer_ms_per_1k_users"] = full_ranking_ms_per_1k_users(trainer, data.train_dataset)
    return out
