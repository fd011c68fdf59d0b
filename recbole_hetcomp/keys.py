"""Config-key and model-name checks: a key must be known to RecBole, to our ``properties/`` yaml or
to a model of the run, and every teacher must be a known general recommender.

Each check raises ``ValueError`` with one line that says what is wrong and how to fix it; the
command line prints it as ``error: ...`` and exits with status 2.
"""

import difflib

import yaml

from recbole_hetcomp.registry import get_model, is_general_model
from recbole_hetcomp.settings import our_keys

# Keys RecBole's Config sets itself (not in any yaml file).
CONFIG_SET_KEYS = frozenset({
    "model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "device", "eval_type", "local_rank",
    "single_spec", "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args",
})

# Keys RecBole 1.2.1 reads in its data, trainer, evaluator and quick-start code but defines in no
# yaml default (listed from its source): a user may set them, so they are not "unknown".
RECBOLE_CODE_KEYS = frozenset({
    "encoding", "world_size", "nproc", "ip", "port", "offset", "tail_ratio", "save_step",
    "convert_token_to_onehot", "token_num_threshold", "kge_interval", "train_rec_step", "train_kg_step",
    "pretrain_epochs", "warm_up_step", "m_step", "n_enc_epochs", "n_dec_epochs", "reg_weight",
    "xgb_params", "xgb_num_boost_round", "xgb_early_stopping_rounds", "xgb_model", "xgb_nthread",
    "xgb_silent", "xgb_verbose_eval", "lgb_params", "lgb_num_boost_round",
    "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS",
    "POS_ITEMS", "REORDER_ITEM_SEQ", "beta", "eta", "ft_ratio", "mask_ratio",
})


def known_keys(config):
    """Every key ``config`` (a RecBole or our Config) defines: RecBole's internal defaults and the
    model's yaml (``internal_config_dict``), every key of our properties yaml (so a student key
    given to a baseline run is harmless), and the keys RecBole sets or reads without a default."""
    return set(config.internal_config_dict) | our_keys() | CONFIG_SET_KEYS | RECBOLE_CODE_KEYS


def _file_of_key(key, config_files, loader):
    """(file, the key as written there: ``key`` or ``<Model>.key``) of the first config file that sets ``key``, or
    (None, ``key``)."""
    for file in config_files or []:
        try:
            with open(file, encoding="utf-8") as f:
                loaded = yaml.load(f.read(), Loader=loader)
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(loaded, dict):
            spelled = [k for k in loaded if k == key or (isinstance(k, str) and k.split(".", 1)[-1] == key)]
            if spelled:
                return file, spelled[0]
    return None, key


def _spelling(key, cmd_args):
    """How ``key`` was written on the command line (``--key`` or ``--Model.key``)."""
    for arg in cmd_args or []:
        name = arg[2:].split("=", 1)[0]
        if name == key or name.endswith("." + key):
            return f"--{name}"
    return f"--{key}"


def check_keys(configs, config_files=None, cmd_args=None):
    """Raise ``ValueError`` naming every key of ``config_files`` or of the ``--key=value`` arguments
    that no model it reaches knows.

    ``configs`` maps a label to the Config built for one model of the run; a key counts as
    known when one of the configs it was given to (``file_config_dict`` or ``cmd_config_dict``)
    knows it, so ``--n_layers=3`` is fine in a run with LightGCN, and ``--LightGCN.n_layers=3``
    is checked against LightGCN alone. ``cmd_args`` only serve to quote the key as it was written.
    """
    reach, from_cmd = {}, set()
    for label, config in configs.items():
        for key in config.file_config_dict:
            reach.setdefault(key, []).append(label)
        for key in config.cmd_config_dict:
            reach.setdefault(key, []).append(label)
            from_cmd.add(key)
    known = {label: known_keys(config) for label, config in configs.items()}
    loader = next(iter(configs.values())).yaml_loader if configs else yaml.SafeLoader
    bad, models = [], []
    for key, labels in reach.items():
        if any(key in known[label] for label in labels):
            continue
        if key in from_cmd:
            where = _spelling(key, cmd_args)
        else:
            file, spelled = _file_of_key(key, config_files, loader)
            where = f"'{spelled}' in {file or '--config_files'}"
        candidates = sorted(set().union(*(known[label] for label in labels)))
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
        if not close:
            lower = {c.lower(): c for c in candidates}
            close = [lower[c] for c in difflib.get_close_matches(key.lower(), list(lower), n=3, cutoff=0.6)]
        bad.append(where + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        for label in labels:
            name = configs[label]["model"]
            if name != "HetCompEnsemble" and name not in models:
                models.append(name)
    if bad:
        many = len(bad) > 1
        raise ValueError(f"unknown config key{'s' if many else ''} {', '.join(bad)}: neither RecBole nor "
                         f"recbole_hetcomp nor {'the models' if len(models) > 1 else 'the model'} it reaches "
                         f"({', '.join(models)}) define{'s' if len(models) <= 1 else ''} "
                         f"{'them' if many else 'it'}; fix the name (keys are listed in properties/overall.yaml, "
                         "properties/model/*.yaml and RecBole's documentation)")



def check_teacher_names(teachers):
    """Every teacher is a known general recommender (not the student), listed once."""
    if not teachers:
        raise ValueError("no teachers: give at least one with --teachers, e.g. --teachers BPR,LightGCN,EASE")
    seen = {}
    for name in teachers:
        cls = get_model(name)  # unknown: ValueError with close matches
        if cls.__name__ in ("HetComp", "HetCompEnsemble"):
            raise ValueError(f"'{name}' cannot be a teacher (it is built from the teachers): "
                             "choose e.g. BPR, LightGCN, NeuMF, MultiVAE, EASE or CML")
        if not is_general_model(cls):
            family = getattr(getattr(cls, "type", None), "name", "other").lower()
            raise ValueError(f"teacher '{name}' is a {family} recommender, not a general one (a teacher must rank "
                             "all items for a user): choose e.g. BPR, LightGCN, NeuMF, MultiVAE, EASE or CML")
        if cls.__name__ in seen:
            raise ValueError(f"teacher {cls.__name__} is listed twice (as '{seen[cls.__name__]}' and '{name}'): "
                             "give each teacher once (weigh one more with teacher_weights)")
        seen[cls.__name__] = name

