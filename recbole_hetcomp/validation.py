"""Checking a run's input before anything expensive happens.

Every check raises ``ValueError`` with one line that says what is wrong and how to fix it;
the command line prints it as ``error: ...`` and exits with status 2.

- :func:`check_pipeline` runs before the pipeline creates its output directory or trains a
  teacher: the output directory can be written (:func:`check_output`), teacher names (known,
  general recommenders, not listed twice), unknown config keys (:func:`check_keys`),
  milestones, the ensemble's settings, and, on the loaded split, ``trajectory_top_n`` (N)
  and the student's ``hetcomp_k`` (K) and ``dkc_k`` against the catalogue; then every stored
  teacher the run will re-use is verified (checksums, dataset, split, format version). It
  returns a :class:`Plan` naming where each teacher will be stored (the CLI counts them
  when a run is interrupted). Cost: one extra load of the dataset (about 1 s on ml-100k).
- :func:`check_keys`: a key given in ``--config_files`` or as ``--key=value`` must be known to
  RecBole (its internal defaults), to our ``properties/`` yaml, or to the yaml of a model it
  reaches; otherwise the close matches are suggested.
- :func:`check_atomic_files` (from :func:`recbole_hetcomp.training.load_data`, before RecBole
  reads the data): the dataset folder and ``.inter`` file exist, the header is RecBole's
  ``name:type`` columns separated by ``field_separator`` with the user and item fields, and
  the first 10,000 lines and the last one have the header's number of fields and numbers
  in float columns.
- :func:`check_split` (from ``load_data``, after the split): the validation and test sets
  are not empty. Users with too few interactions can get no validation or test item under
  RecBole's per-user ratio split (a user with one interaction keeps it in training): like
  RecBole, the run then evaluates the users that have them; :func:`split_coverage` counts
  the others and :func:`check_pipeline` logs one warning line saying how many and how to
  filter them (``user_inter_num_interval``).
"""

import contextlib
import difflib
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

logger = logging.getLogger("recbole_hetcomp")

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

FEATURE_TYPES = ("token", "float", "token_seq", "float_seq")
CHECKED_LINES = 10_000  # data lines of an .inter file checked from its start (plus its last line)

#: The last :class:`Plan` of this process (read by the command line when a run is interrupted).
last_plan = None


@dataclass
class Plan:
    """What a checked pipeline run will do: its teachers and the store directory of each."""

    dataset: str
    teachers: list
    store_paths: dict = field(default_factory=dict)  # teacher -> Path of its finished store directory
    protocol: object = None  # the ensemble's Data (split and loaders), loaded by the check: reuse it

    def stored(self):
        """Teachers whose trajectory is complete in the store now, in run order."""
        return [t for t in self.teachers if t in self.store_paths and (self.store_paths[t] / "meta.json").is_file()]


# ----------------------------------------------------------------------------- config keys


@functools.lru_cache(maxsize=None)
def our_keys():
    """Every key of our ``properties/`` yaml (overall, every model, every dataset)."""
    from recbole_hetcomp.utils import properties_dir

    props = properties_dir()
    keys = set()
    for path in [props / "overall.yaml", *sorted((props / "model").glob("*.yaml")),
                 *sorted((props / "dataset").glob("*.yaml"))]:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):
            keys.update(loaded)
    return frozenset(keys)


def known_keys(config):
    """Every key ``config`` (a RecBole or our Config) defines: RecBole's internal defaults and the
    model's yaml (``internal_config_dict``), every key of our properties yaml (so a student key
    given to a baseline run is harmless), and the keys RecBole sets or reads without a default."""
    return set(config.internal_config_dict) | our_keys() | CONFIG_SET_KEYS | RECBOLE_CODE_KEYS


def _file_of_key(key, config_files, loader):
    for file in config_files or []:
        try:
            with open(file, encoding="utf-8") as f:
                loaded = yaml.load(f.read(), Loader=loader)
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(loaded, dict) and key in loaded:
            return file
    return None


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
            file = _file_of_key(key, config_files, loader)
            where = f"'{key}' in {file}" if file else f"'{key}' in --config_files"
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


# ----------------------------------------------------------------------------- models and values


def check_teacher_names(teachers):
    """Every teacher is a known general recommender (not the student), listed once."""
    from recbole_hetcomp.utils import get_model, is_general_model

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


def _positive_int(config, key):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer")
    return value


def pair_batch_bound(config):
    """``predict_batch_size``, checked: the most (user, item) pairs scored at once, None for no bound."""
    return None if config["predict_batch_size"] is None else _positive_int(config, "predict_batch_size")


def catalogue_room(train_dataset):
    """(items, most training items of one user, unobserved items left to that user to rank)."""
    import numpy as np

    items = train_dataset.item_num - 1  # RecBole's id 0 is padding
    max_train = int(np.diff(train_dataset.inter_matrix(form="csr").indptr).max())
    return items, max_train, items - max_train


def check_student(config, train_dataset, top_n):
    """``hetcomp_k`` (K), ``dkc_k`` and ``hetcomp_p`` fit the catalogue and the teachers' N."""
    items, max_train, room = catalogue_room(train_dataset)
    where = f"this dataset has {items} items and a user with {max_train} training items leaves {room} to rank"
    _positive_int(config, "hetcomp_p")
    for key in ("hetcomp_k", "dkc_k"):
        value = _positive_int(config, key)
        if value > room:
            raise ValueError(f"{key}={value} is larger than the catalogue allows ({where}): "
                             f"set --{key} (and --trajectory_top_n) to at most {room}")
        if value > top_n:
            raise ValueError(f"{key}={value} is larger than trajectory_top_n={top_n}, the length of the teachers' "
                             f"lists it is built from: lower --{key} or raise --trajectory_top_n to at least "
                             f"{value} (at most {room} here)")


# ----------------------------------------------------------------------------- data


def _recbole_download_names():
    import recbole

    path = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    try:
        return set(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return set()


def _show(line):
    return repr(line if len(line) <= 60 else line[:57] + "...")


def check_atomic_files(config):
    """The dataset's ``.inter`` file(s) exist and look like RecBole's atomic format (see module doc)."""
    name, folder = config["dataset"], Path(config["data_path"])
    if not folder.is_dir():
        if name in _recbole_download_names():
            return  # RecBole downloads it
        raise ValueError(f"dataset '{name}' not found: there is no folder {folder}; put {name}.inter (RecBole's "
                         f"atomic format) in it, or set --data_path to the folder that holds {name}/")
    suffixes = config["benchmark_filename"] or [None]
    for suffix in suffixes:
        check_inter_file(folder / (f"{name}.inter" if suffix is None else f"{name}.{suffix}.inter"), config)


def check_inter_file(path, config):
    sep = config["field_separator"] or "\t"
    encoding = config["encoding"] or "utf-8"
    fmt = "a header such as 'user_id:token<TAB>item_id:token<TAB>rating:float', then one interaction per line"
    if not path.is_file():
        raise ValueError(f"dataset '{config['dataset']}': {path} is missing: write the interactions there in "
                         f"RecBole's atomic format ({fmt})")
    try:
        with open(path, encoding=encoding, newline="") as f:
            header = f.readline().rstrip("\r\n")
            head = [line.rstrip("\r\n") for _, line in zip(range(CHECKED_LINES), f)]
        last = _last_line(path, encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not {encoding} text ({e.reason} at byte {e.start}): convert it to {encoding}, "
                         "or set --encoding to its encoding") from None
    if not header.strip():
        raise ValueError(f"{path} is empty: an atomic .inter file starts with {fmt}")
    columns = header.split(sep)
    fields = []
    for col in columns:
        name, _, ftype = col.partition(":")
        if len(columns) == 1 and not ftype.startswith(FEATURE_TYPES):
            guess = next((f" (it looks {label}-separated)" for s, label in ((",", "','"), (";", "';'"), ("::", "'::'"),
                                                                          (" ", "space"), ("\t", "tab"))
                          if s != sep and s in header), "")
            raise ValueError(f"{path} line 1: the header {_show(header)} has one column{guess}, but columns are "
                             f"separated by field_separator={sep!r}: write {fmt}, or set --field_separator")
        if ftype not in FEATURE_TYPES:
            raise ValueError(f"{path} line 1: column {col!r} is not 'name:type' with a type of "
                             f"{', '.join(FEATURE_TYPES)}: write {fmt}")
        fields.append((name, ftype))
    names = [n for n, _ in fields]
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        if config[key] not in names:
            raise ValueError(f"{path} line 1: no {config[key]} column (the {key}) in the header {_show(header)}: "
                             f"write {fmt}, or set --{key} to the right column")
    load = (config["load_col"] or {}).get("inter") if isinstance(config["load_col"], dict) else None
    floats = [i for i, (n, t) in enumerate(fields) if t == "float" and (load is None or n in load)]
    rows = 0
    lines = [(n, line) for n, line in enumerate(head, 2)]
    if last is not None and len(head) == CHECKED_LINES:
        lines.append(("its last", last))
    for number, line in lines:
        if not line.strip():
            continue
        rows += 1
        values = line.split(sep)
        if len(values) != len(fields):
            raise ValueError(f"{path} line {number}: {len(values)} fields, the header has {len(fields)} (separated by "
                             f"{sep!r}): {_show(line)}; fix the line (a truncated file?)")
        for i in floats:
            if values[i].strip() and not _is_number(values[i]):
                raise ValueError(f"{path} line {number}: {fields[i][0]} {values[i]!r} is not a number "
                                 f"(its column is {fields[i][0]}:float): {_show(line)}; fix the line")
    if rows == 0:
        raise ValueError(f"{path} has a header but no interactions: write one interaction per line after it")


def _is_number(text):
    try:
        return not math.isnan(float(text)) or text.strip().lower() == "nan"
    except ValueError:
        return False


def _last_line(path, encoding):
    """The file's last non-empty line (read from its end), or None."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read().decode(encoding, errors="replace").splitlines()
    tail = [t for t in tail if t.strip()]
    return tail[-1] if tail else None


def check_split(data):
    """The split leaves validation and test interactions (``data``: a :class:`~recbole_hetcomp.training.Data`)."""
    config = data.config
    for phase in ("valid", "test"):
        if len(getattr(data, phase)._dataset.inter_feat) == 0:
            name = "validation" if phase == "valid" else "test"
            if _presplit(config):
                raise ValueError(f"dataset '{config['dataset']}': {_split_name(config)} hold no {name} "
                                 f"interactions; add them to its .{phase}.inter file (or its source)")
            raise ValueError(f"dataset '{config['dataset']}': {_split_name(config)} leaves no {name} interactions "
                             "(its users have too few interactions: one that has a single interaction keeps it for "
                             "training); use a dataset with more interactions per user or change eval_args")


def _presplit(config):
    """Whether the dataset comes as train/valid/test files (``benchmark_filename``), not split by RecBole."""
    return "benchmark_filename" in config and bool(config["benchmark_filename"])


def _split_name(config):
    if _presplit(config):
        return f"the dataset's own split files (benchmark_filename: {list(config['benchmark_filename'])})"
    return f"the split {config['eval_args']['split']}"


def split_coverage(data):
    """(users, users without validation items, users without test items); users are the real ones."""
    uid = data.train_dataset.uid_field
    users = data.train_dataset.user_num - 1
    valid = len(set(data.valid._dataset.inter_feat[uid].tolist()))
    test = len(set(data.test._dataset.inter_feat[uid].tolist()))
    return users, users - valid, users - test


def warn_uncovered(data):
    users, no_valid, no_test = split_coverage(data)
    if no_valid or no_test:
        head = f"{no_valid} of {users} users have no validation interaction and {no_test} no test interaction"
        if _presplit(data.config):  # RecBole neither splits nor filters such files
            logger.warning(f"{head} in {_split_name(data.config)}: they are trained on but not evaluated, as in "
                           "RecBole (CiteULike-t's protocol drops validation and test items that no user trains on)")
        else:
            logger.warning(f"{head} (too few interactions for {_split_name(data.config)}): they are trained on but "
                           "not evaluated, as in RecBole; to leave them out, filter them with "
                           "user_inter_num_interval, e.g. --user_inter_num_interval=\"[10,inf)\"")
    return users, no_valid, no_test


# ----------------------------------------------------------------------------- the pipeline


def check_output(output):
    """``output`` can be created and written, judged without creating anything (the pipeline's
    ``prepare_output`` then creates it and tries a real write)."""
    path = Path(output).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    why = None
    if not probe.is_dir():
        why = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = f"no permission to write in {probe}"
    if why:
        raise ValueError(f"output directory {output} is not writable ({why}): choose another with --output")


class _DropRecBoleInfo(logging.Filter):
    def filter(self, record):
        return not (record.name == "root" and record.levelno <= logging.INFO)


@contextlib.contextmanager
def _quiet_recbole_info():
    """Hide RecBole's own INFO lines (it logs on the root logger); ours, such as a MovieLens
    conversion, still show."""
    handlers, drop = list(logging.getLogger().handlers), _DropRecBoleInfo()
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def check_pipeline(dataset, teachers=None, config_files=None, config_dict=None, cmd_args=None, student=True,
                   output=None, rebuild=False):
    """Check a pipeline run before anything is written or trained; returns its :class:`Plan`.

    Checks that ``output`` can be written, builds the run's configs (ensemble, teachers,
    student, the MF baseline), checks names, keys and values, loads the split once
    (converting a MovieLens archive if needed), checks N and K against its catalogue and,
    unless ``rebuild``, verifies every stored teacher the run will re-use (a damaged or
    foreign store is named now, not after the teachers before it have trained).
    """
    global last_plan
    from recbole_hetcomp.ensemble import importance, importance_from_config, teacher_weight_vector
    from recbole_hetcomp.pipeline import scoped_args, split_global_args
    from recbole_hetcomp.store import TrajectoryStore, teacher_key
    from recbole_hetcomp.teachers import _check_teacher
    from recbole_hetcomp.trajectory import check_milestones
    from recbole_hetcomp.training import load_data, make_config

    if output is not None:
        check_output(output)
    global_args = split_global_args(cmd_args)
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, global_args)
    teachers = list(teachers or base["teachers"] or [])
    check_teacher_names(teachers)
    run_models = ["HetComp", *teachers]
    configs = {"HetCompEnsemble": base}
    for name in teachers:
        configs[name] = make_config(name, dataset, config_files, config_dict, scoped_args(cmd_args, name, run_models))
    configs["HetComp"] = make_config("HetComp", dataset, config_files, config_dict,
                                     scoped_args(cmd_args, "HetComp", run_models))
    if student:  # the MF baseline: BPR with the student's embedding size and the global arguments
        configs["BPR (MF baseline)"] = make_config(
            "BPR", dataset, config_files, {**(config_dict or {}), "embedding_size": configs["HetComp"]["embedding_size"]},
            global_args)
    check_keys(configs, config_files, cmd_args)
    for config in configs.values():
        _positive_int(config, "eval_batch_size")
        pair_batch_bound(config)
    for name in teachers:
        check_milestones(configs[name]["trajectory_milestones"])
    teacher_weight_vector(teachers, base["teacher_weights"])
    importance(torch.zeros(1), **importance_from_config(base))

    with _quiet_recbole_info():  # RecBole's loader reports the split at INFO: the run does that later
        protocol = load_data(base)
    warn_uncovered(protocol)
    for name in teachers:
        _check_teacher(configs[name], protocol.train_dataset)
    if student:
        check_student(configs["HetComp"], protocol.train_dataset,
                      min(configs[name]["trajectory_top_n"] for name in teachers))
    store = TrajectoryStore(base["trajectory_store"])
    keys = {name: teacher_key(configs[name], protocol.fingerprint) for name in teachers}
    paths = {name: store.path(dataset, configs[name]["model"], keys[name]) for name in teachers}
    for name in teachers:
        if not rebuild and store.exists(dataset, configs[name]["model"], keys[name]):
            store.load(dataset, configs[name]["model"], keys[name], protocol.fingerprint)  # StoreError names it
    last_plan = Plan(dataset, [configs[n]["model"] for n in teachers],
                     {configs[n]["model"]: p for n, p in paths.items()}, protocol)
    return last_plan
