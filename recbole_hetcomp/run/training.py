"""Training and evaluating any model under RecBole's protocol, on one shared split.

    config = make_config("BPR", "ml-100k")        # recbole_hetcomp.config (yaml overlay, explicit cmd args)
    data = load_data(config)                       # dataset, loaders, split fingerprint
    trainer, row = train_model(data, "checkpoints/")
"""

import contextlib
import importlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field

from recbole.data import create_dataset, create_samplers, data_preparation, get_dataloader
from recbole.utils import ModelType, init_seed
from recbole.utils.argument_list import dataset_arguments

from recbole_hetcomp.data import checks, citeulike
from recbole_hetcomp.data.movielens import ensure_dataset
from recbole_hetcomp.registry import count_parameters, get_model, get_trainer
from recbole_hetcomp.run.inference import full_ranking_ms_per_1k_users, save_model
from recbole_hetcomp.trainer import CheckpointMixin, bound_pair_batches
from recbole_hetcomp.trajectories.store import split_fingerprint

logger = logging.getLogger("recbole_hetcomp")


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


#: While a run shares its split (:func:`shared_split`): {key: (dataset, built split, fingerprint)}.
_shared = None
#: How many times this process built a RecBole dataset and split (what :func:`shared_split` saves).
builds = 0

# What RecBole itself compares before it re-uses a saved dataset (its create_dataset), plus the split's settings
# and our data keys: two configs equal on these build the same dataset and split.
_SPLIT_KEYS = (*dataset_arguments, "seed", "repeatable", "reproducibility", "eval_args", "dataset", "data_path",
               "split_seed", "dataset_archive")


@contextlib.contextmanager
def shared_split():
    """Inside this block :func:`load_data` builds each distinct dataset and split once and gives every later
    config with the same data settings its own data loaders over the same split (a run's teachers, students and
    baseline). Outside it, every call builds its own, as RecBole's ``run_recbole`` does."""
    global _shared
    outer = _shared
    if outer is None:
        _shared = {}
    try:
        yield
    finally:
        if outer is None:
            _shared = None


def _split_key(config):
    """The key of ``config``'s dataset and split, or None where it is not RecBole's plain ``Dataset`` (a model
    with a dataset class of its own, sequential or knowledge-based models): those are never shared."""
    if hasattr(importlib.import_module("recbole.data.dataset"), f"{config['model']}Dataset"):
        return None
    if config["MODEL_TYPE"] not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        return None
    return repr([(k, config[k]) for k in _SPLIT_KEYS])


def split_settings_differ(config, reference):
    """The split settings (keys of :data:`_SPLIT_KEYS`) on which ``config`` differs from ``reference``: where there
    are none the two build the same dataset and split."""
    return [k for k in _SPLIT_KEYS if config[k] != reference[k]]


def _recbole_data(config):
    """RecBole's own ``create_dataset`` and ``data_preparation``, for datasets that are never shared."""
    global builds
    builds += 1
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return dataset, train, valid, test, split_fingerprint(train._dataset, valid._dataset, test._dataset)


def _build(config):
    """RecBole's dataset and split of ``config``, seeded as ``run_recbole`` seeds them."""
    global builds
    builds += 1
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return dataset, dataset.build()


def _fingerprint(loaders):
    # taken from the loaders' datasets, after they are made: RecBole's loaders reorder the split in place
    return split_fingerprint(*(loader._dataset for loader in loaders))


def _loaders(config, dataset, built):
    """``config``'s data loaders over a built split: RecBole's ``data_preparation`` without the build."""
    samplers = create_samplers(config, dataset, built)
    return (get_dataloader(config, "train")(config, built[0], samplers[0], shuffle=config["shuffle"]),
            get_dataloader(config, "valid")(config, built[1], samplers[1], shuffle=False),
            get_dataloader(config, "test")(config, built[2], samplers[2], shuffle=False))


def load_data(config):
    """Build dataset and split exactly as RecBole's ``run_recbole`` does, seeded the same way (inside
    :func:`shared_split`, once per distinct data settings).

    A MovieLens dataset whose atomic files are missing is first converted from the official
    GroupLens archive (``dataset_archive``, a local copy, or a download): see
    :mod:`recbole_hetcomp.data.movielens`. CiteULike-t is split from its ``users.dat``
    (``dataset_archive``) with the HetComp paper's protocol, seeded by ``split_seed``: see
    :mod:`recbole_hetcomp.data.citeulike`.
    """
    data_root = os.path.dirname(os.path.normpath(config["data_path"]))
    if config["dataset"] == citeulike.DATASET:
        citeulike.ensure_citeulike(data_root, source=config["dataset_archive"], split_seed=config["split_seed"])
    else:
        ensure_dataset(config["dataset"], data_root, archive=config["dataset_archive"],
                       download=config["dataset_download"] is not False)
    checks.check_atomic_files(config)  # one clear line for a missing, empty or garbled .inter
    key = _split_key(config)
    if key is None:  # RecBole's own path, every time
        dataset, train, valid, test, fingerprint = _recbole_data(config)
    else:
        cached = _shared.get(key) if _shared is not None else None
        loaders = _loaders(config, cached[0], cached[1]) if cached is not None else None
        if loaders is not None and _fingerprint(loaders) != cached[2]:  # never seen; a fresh build is always right
            logger.warning(f"{config['model']}'s loaders changed the shared split: building its own")
            cached = None
        if cached is None:
            dataset, built = _build(config)
            loaders = _loaders(config, dataset, built)
            cached = (dataset, built, _fingerprint(loaders))
            if _shared is not None:
                _shared.setdefault(key, cached)
        dataset, _, fingerprint = cached
        train, valid, test = loaders
    data = Data(config, dataset, train, valid, test, fingerprint)
    checks.check_split(data)  # no validation or test interactions at all is an error
    return data


def checkpointed(trainer_cls):
    """``trainer_cls`` loading its checkpoints with ``weights_only=False`` (ours are trusted)."""
    if issubclass(trainer_cls, CheckpointMixin):
        return trainer_cls
    return type(f"Checkpointed{trainer_cls.__name__}", (CheckpointMixin, trainer_cls), {})


def train_model(data, workdir, trainer_cls=None, model_kwargs=None, prepare=None, save_to=None,
                on_evaluation=None):
    """Train ``data.config['model']`` as RecBole would; returns (trainer, row).

    ``trainer_cls`` defaults to the trainer :func:`~recbole_hetcomp.registry.get_trainer` picks;
    ``model_kwargs`` go to the model's constructor (HetComp's ``trajectories``); ``prepare(trainer)``
    runs just before ``fit``; ``on_evaluation(epoch, score, valid_result)`` after every
    validation (Ray Tune's progress reports). Checkpoints go to a private directory inside ``workdir``; the best
    one is copied to ``save_to`` if given (reload it with
    :func:`recbole_hetcomp.run.inference.load_data_and_model`). The row holds the test and best
    validation metrics, parameters, training time, epochs, the validation curve and the
    full-ranking time per 1,000 users.
    """
    config, name = data.config, data.config["model"]
    config["checkpoint_dir"] = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(name)(config, data.train_dataset, **(model_kwargs or {})).to(config["device"])
    trainer = checkpointed(trainer_cls or get_trainer(config["MODEL_TYPE"], name))(config, model)
    if prepare is not None:
        prepare(trainer)
    curve = {"epochs": [], "scores": []}

    def record(epoch, score):
        curve["epochs"].append(int(epoch))
        curve["scores"].append(float(score))
        if on_evaluation is not None:
            on_evaluation(int(epoch), float(score), trainer.last_valid_result)

    start = time.time()
    _, best_valid = trainer.fit(data.train, data.valid, saved=True, show_progress=config["show_progress"],
                                callback_fn=record)
    train_s = time.time() - start
    test = trainer.evaluate(data.test, load_best_model=True)
    epochs = (max(trainer.train_loss_dict) + 1) if trainer.train_loss_dict else 0
    row = {"name": name, "kind": "baseline", "params": count_parameters(model), "test": dict(test or {}),
           "valid": dict(best_valid or {}), "train_s": train_s, "epochs": epochs,
           "s_per_epoch": train_s / max(epochs, 1), "valid_metric": config["valid_metric"],
           "valid_curve": curve,
           "infer_ms_per_1k_users": full_ranking_ms_per_1k_users(trainer, data.train_dataset)}
    if save_to is not None:
        row["model_file"] = str(save_model(trainer, save_to))
    if hasattr(trainer, "curriculum_summary"):
        row["curriculum"] = trainer.curriculum_summary()
    note = training_note(curve, epochs, config)
    if note:
        row["training_note"] = note
        logger.warning(f"{name}: {note}")
    return trainer, row


def training_note(curve, epochs, config):
    """What the end of a training says about its length: one line, or None where it says nothing.

    ``curve`` is the validation curve (``{"epochs", "scores"}``, one point an evaluation), ``epochs`` how many
    epochs trained, ``config`` the model's (``epochs``, ``stopping_step``, ``valid_metric``; a RecBole config or a
    stored dict). Two endings are worth a line: early stopping ended it with no evaluation scoring above its
    first (a model that starts on a plateau, as a LightGCN student on ml-1m at the MF student's settings,
    stops there unless more patience lets it off: docs/kd.md#another-student), and a run that used every epoch
    with its last evaluation its best (still rising when the limit cut it)."""
    at, scores = (curve or {}).get("epochs", []), (curve or {}).get("scores", [])
    if len(scores) < 2 or epochs is None or any(k not in config for k in ("epochs", "stopping_step", "valid_metric")):
        return None  # one evaluation, or a stored record without its settings: nothing to say
    metric = config["valid_metric"]
    if epochs < config["epochs"] and max(scores[1:]) <= scores[0]:
        return (f"early stopping ended it after epoch {epochs - 1} with no validation {metric} above its first "
                f"evaluation's ({scores[0]:.4f}, epoch {at[0]}): it may have stopped on a plateau; a larger "
                f"stopping_step (now {config['stopping_step']} evaluations) lets it train on")
    if epochs >= config["epochs"] and scores[-1] >= max(scores) and scores[-1] > scores[0]:
        return (f"it trained all {config['epochs']} epochs and its last evaluation was its best (validation {metric} "
                f"{scores[-1]:.4f}, epoch {at[-1]}): more epochs may raise it")
    return None


def evaluate_model(model, data, phases=("valid", "test"), timing=False):
    """RecBole's evaluation of an already-built ``model`` on ``data``'s loaders (no training).
    With ``timing``, also ``infer_ms_per_1k_users`` (full ranking of every user)."""
    from recbole.trainer import Trainer

    trainer = bound_pair_batches(Trainer(data.config, model), data.config)
    out = {phase: dict(trainer.evaluate(getattr(data, phase), load_best_model=False)) for phase in phases}
    if timing:
        out["infer_ms_per_1k_users"] = full_ranking_ms_per_1k_users(trainer, data.train_dataset)
    return out
