"""Checks of a dataset: its atomic files before RecBole reads them, its split after.

:func:`check_atomic_files` (called by :func:`recbole_hetcomp.run.training.load_data`): the
dataset folder and ``.inter`` file exist, the header is RecBole's ``name:type`` columns
separated by ``field_separator`` with the user and item fields, and the first 10,000 lines and
the last one have the header's number of fields and numbers in float columns. Each problem is
one ``ValueError`` line naming the file, the line and the fix.

:func:`check_split` (from ``load_data``, after the split): the validation and test sets are not
empty. Users with too few interactions can get no validation or test item under RecBole's
per-user ratio split (a user with one interaction keeps it in training): like RecBole, the run
then evaluates the users that have them; :func:`split_coverage` counts the others and
:func:`warn_uncovered` logs one warning line saying how many and how to filter them
(``user_inter_num_interval``).
"""

import logging
import math
from pathlib import Path

import yaml

logger = logging.getLogger("recbole_hetcomp")

FEATURE_TYPES = ("token", "float", "token_seq", "float_seq")
CHECKED_LINES = 10_000  # data lines of an .inter file checked from its start (plus its last line)


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
    """The split leaves validation and test interactions (``data``: a
    :class:`~recbole_hetcomp.run.training.Data`, or any object with its ``config``, ``valid`` and ``test`` loaders)."""
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
