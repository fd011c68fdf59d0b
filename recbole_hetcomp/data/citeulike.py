"""CiteULike-t as RecBole benchmark files, split with the HetComp paper's protocol.

The source is ``users.dat`` of the citeulike-t dataset (Wang, Chen and Li, IJCAI 2013),
published in the public GitHub repository js05212/citeulike-t; the HetComp authors read
the same file. Line ``n`` (0-based) is user ``n``: a count, then that many 0-based item
ids, separated by spaces::

    3 12 7 403

:func:`ensure_citeulike` turns it into the three files RecBole reads when
``benchmark_filename: [train, valid, test]`` is set (``properties/dataset/citeulike-t.yaml``)::

    <data_root>/citeulike-t/citeulike-t.train.inter    header: user_id:token<TAB>item_id:token
    <data_root>/citeulike-t/citeulike-t.valid.inter
    <data_root>/citeulike-t/citeulike-t.test.inter
    <data_root>/citeulike-t/split.json                 source md5, split_seed, counts, file md5s

Protocol, as in the authors' released code (``Utils/data_utils.py`` of
SeongKu-Kang/HetComp_WWW23):

1. Keep users with at least 5 items; no item filter (5,219 users, 25,181 items and
   125,580 interactions remain of the real file's 7,947 / 25,584 / 134,860).
2. Split each kept user's ``n`` items at random: ``floor(n / 5)`` to test, the next
   ``floor(n / 5)`` to validation, the remaining ``n - 2 floor(n / 5)`` (at least 60 %)
   to training. This is the authors' rule (``int(n * 0.2)`` items each for test and
   validation, the rest for training), chosen so that our split matches theirs in
   distribution: rounding (``round(0.6 n)``, ``round(0.2 n)``, the rest) agrees for a
   5-item user (3/1/1) but not for others (n = 8: 5/2/1 instead of the authors' 6/1/1).
   Every kept user (n >= 5) thus gets at least one validation and one test item before
   step 3.
3. Drop validation and test items that no user has in training (no model learns
   anything about them, and the authors drop them). A user left with
   an empty validation *or* test set loses both (is not evaluated) but keeps their
   training rows, as in the authors' code: those interactions still train every model.

Randomness: one ``numpy.random.Generator`` seeded with ``split_seed`` for the whole file;
users are shuffled in file order (``Generator.permutation`` of the user's items), so a
seed always gives the same split. The seed changes only the split; RecBole's ``seed``
still drives training. Rows are written user by user in file order, each user's items in
ascending id order. User tokens are the 0-based line numbers, item tokens the ids as
integers (``007`` is written ``7``).

Checks: every line must be ``<count> <id> ...`` with the count equal to the number of
ids and every id a non-negative integer; a bad line raises :class:`ValueError` naming the
file, the line (1-based, with its 0-based user id) and the fix; so does an empty file.
An item listed twice by the same user counts once (the duplicate is dropped and counted
in ``split.json``; the real file has none), so the 5-item threshold counts distinct items.

Where the source is looked for: ``source`` (config key ``dataset_archive``, command line
``--archive PATH``), else ``<data_root>/citeulike-t/users.dat``. With neither, a split
already written for the same ``split_seed`` (its files intact, checked against the md5s
in ``split.json``) is used as it is, so ``--archive`` is needed only once; otherwise
:class:`FileNotFoundError` says in one line what the file is, where to get it and where
to put it. When the files are intact and ``split.json`` records the source's md5 and the
same ``split_seed``, nothing is rewritten; otherwise the split is made again.

Writing is all or nothing: the source is read and split completely first; the four files
are then written under temporary names beside their final ones, the old ``split.json`` is
removed, the three ``.inter`` files are renamed into place and the new ``split.json``
last. A failure leaves no temporary file, and ``split.json`` exists only beside the files
it describes (without it, the next call regenerates).
"""

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATASET = "citeulike-t"
SOURCE_NAME = "users.dat"
PARTS = ("train", "valid", "test")
HEADER = "user_id:token\titem_id:token"
MIN_ITEMS = 5  # users with fewer distinct items are dropped before the split
FORMAT_VERSION = 1
RULE = "per user with n >= 5 items: test = valid = floor(n / 5) items, train = the rest"
WHERE_TO_GET = ("download users.dat from the public GitHub repository js05212/citeulike-t "
                "(https://github.com/js05212/citeulike-t)")
_LINE_FORMAT = "each line must be '<count> <item id> <item id> ...' with count = the number of ids"


def ensure_citeulike(data_root, source=None, split_seed=0):
    """Make sure ``<data_root>/citeulike-t/`` holds the split for ``split_seed``; return ``split.json``'s content.

    ``source`` is a path to ``users.dat`` (default: ``<data_root>/citeulike-t/users.dat``).
    Raises FileNotFoundError when no source is found (and no split for ``split_seed`` is
    already there), ValueError when the source is malformed or ``split_seed`` is not a
    non-negative integer; neither leaves anything half-written. See the module docstring.
    """
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative integer, got {split_seed!r} "
                         f"(set it in properties/dataset/{DATASET}.yaml or with --split_seed=N)")
    split_seed = int(split_seed)
    folder = Path(data_root) / DATASET
    src = _find_source(folder, source)
    if src is None:
        meta = _current_split(folder, split_seed)
        if meta is not None:
            return meta
        raise FileNotFoundError(
            f"CiteULike-t's {SOURCE_NAME} (one line per user: a count, then the ids of the items the user saved) "
            f"was not found at {folder / SOURCE_NAME}: {WHERE_TO_GET} and put it there, or pass --archive PATH "
            f"(config key dataset_archive)")
    md5 = _md5(src)
    meta = _current_split(folder, split_seed, md5)
    if meta is not None:
        return meta

    start = time.perf_counter()
    users, raw = read_users(src)
    split = split_users(users, split_seed)
    parts, dropped = drop_unseen(split)
    kept = [u for u, items in enumerate(users) if len(items) >= MIN_ITEMS]
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": DATASET,
        "source": {"path": str(src), "md5": md5, **raw},
        "split_seed": split_seed,
        "rule": RULE,
        "min_items": MIN_ITEMS,
        "before_split": {"users": len(kept), "items": len({i for u in kept for i in users[u]}),
                         "interactions": sum(len(users[u]) for u in kept)},
        "rows": {part: len(rows) for part, rows in parts.items()},
        "after_split": {"users": len({u for u, _ in parts["train"]}),
                        "items": len({i for _, i in parts["train"]}),
                        "evaluated_users": len({u for u, _ in parts["test"]})},
        **dropped,
    }
    _write_split(folder, parts, meta)
    meta["seconds"] = round(time.perf_counter() - start, 3)  # informative only, not written
    return meta


def read_users(path):
    """Parse a ``users.dat``; returns (one list of distinct item ids per line, raw counts).

    Raw counts: ``users`` (lines), ``items`` (distinct ids), ``interactions`` (ids listed)
    and ``duplicates_dropped`` (ids a user listed more than once, kept once).
    """
    path = Path(path)
    fix = (f"{_LINE_FORMAT}; this should be CiteULike-t's {SOURCE_NAME}: {WHERE_TO_GET} again "
           f"if the file was altered")
    with open(path, encoding="latin-1", newline=None) as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path} is empty: expected CiteULike-t's {SOURCE_NAME}, one line per user; {WHERE_TO_GET}")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new user
    users, listed, duplicates = [], 0, 0
    for number, line in enumerate(lines, start=1):
        where = f"{path} line {number} (user {number - 1})"
        tokens = line.split()
        if not tokens:
            raise ValueError(f"{where} is empty: a user without items is written '0'; {fix}")
        count, ids = tokens[0], tokens[1:]
        if not _is_uint(count):
            raise ValueError(f"{where}: the count {count!r} is not a non-negative integer: {_shown(line)}; {fix}")
        if int(count) != len(ids):
            raise ValueError(f"{where}: the count says {int(count)} items but {len(ids)} ids follow: "
                             f"{_shown(line)}; {fix}")
        for token in ids:
            if not _is_uint(token):
                problem = ("is negative (ids are 0-based)" if token.startswith("-") and _is_uint(token[1:])
                           else "is not an integer")
                raise ValueError(f"{where}: the item id {token!r} {problem}: {_shown(line)}; {fix}")
        items = list(dict.fromkeys(int(token) for token in ids))
        listed += len(ids)
        duplicates += len(ids) - len(items)
        users.append(items)
    raw = {"users": len(users), "items": len({i for items in users for i in items}),
           "interactions": listed, "duplicates_dropped": duplicates}
    return users, raw


def split_users(users, split_seed):
    """Random per-user split of every user with at least :data:`MIN_ITEMS` items.

    ``users[u]`` lists user ``u``'s distinct items. Returns ``{u: (train, valid, test)}`` in
    user order, each a sorted list: ``floor(n / 5)`` test items, ``floor(n / 5)``
    validation items, the rest training (the authors' rule, see the module docstring).
    """
    rng = np.random.default_rng(split_seed)
    split = {}
    for u, items in enumerate(users):
        n = len(items)
        if n < MIN_ITEMS:
            continue
        order = rng.permutation(np.asarray(items, dtype=np.int64)).tolist()
        k = n // 5
        split[u] = (sorted(order[2 * k:]), sorted(order[k:2 * k]), sorted(order[:k]))
    return split


def drop_unseen(split):
    """Remove validation/test items absent from every training list, then users left with an
    empty validation or test list (from both; their training rows stay).

    Returns ``({part: [(user, item), ...]}, counts of what was dropped)``.
    """
    seen = {i for train, _, _ in split.values() for i in train}
    parts = {part: [] for part in PARTS}
    unseen = {"valid": 0, "test": 0}
    with_users = {"valid": 0, "test": 0}
    users_dropped = 0
    for u, (train, valid, test) in split.items():
        parts["train"].extend((u, i) for i in train)
        kept = {}
        for part, items in (("valid", valid), ("test", test)):
            kept[part] = [i for i in items if i in seen]
            unseen[part] += len(items) - len(kept[part])
        if not kept["valid"] or not kept["test"]:
            users_dropped += 1
            with_users["valid"] += len(kept["valid"])
            with_users["test"] += len(kept["test"])
            continue
        for part in ("valid", "test"):
            parts[part].extend((u, i) for i in kept[part])
    dropped = {"unseen_items_dropped": unseen, "users_dropped": users_dropped,
               "seen_items_dropped_with_users": with_users}
    return parts, dropped


def _find_source(folder, source):
    if source is not None and str(source) != "":
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist or is not a file: it should be CiteULike-t's {SOURCE_NAME}; "
                f"{WHERE_TO_GET} and pass its path with --archive PATH (config key dataset_archive), "
                f"or put it at {folder / SOURCE_NAME}")
        return path
    default = folder / SOURCE_NAME
    return default if default.is_file() else None


def _current_split(folder, split_seed, md5=None):
    """``split.json``'s content when the split on disk is intact, for ``split_seed`` and (if
    given) the source with ``md5``; None otherwise."""
    try:
        meta = json.loads((folder / "split.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION \
            or meta.get("split_seed") != split_seed:
        return None
    if md5 is not None and meta.get("source", {}).get("md5") != md5:
        return None
    files = meta.get("files", {})
    for part in PARTS:
        path = folder / _inter_name(part)
        if part not in files or not path.is_file() or _md5(path) != files[part].get("md5"):
            return None
    return meta


def _write_split(folder, parts, meta):
    folder.mkdir(parents=True, exist_ok=True)
    temps = {}
    try:
        files = {}
        for part in PARTS:
            text = HEADER + "\n" + "".join(f"{u}\t{i}\n" for u, i in parts[part])
            temps[_inter_name(part)] = _write_temp(folder, _inter_name(part), text)
            files[part] = {"name": _inter_name(part), "rows": len(parts[part]),
                           "md5": hashlib.md5(text.encode()).hexdigest()}
        meta["files"] = files
        temps["split.json"] = _write_temp(folder, "split.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        (folder / "split.json").unlink(missing_ok=True)  # the old split is no longer vouched for
        for name in [_inter_name(part) for part in PARTS] + ["split.json"]:
            os.replace(temps.pop(name), folder / name)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def _write_temp(folder, name, text):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; data files are meant to be shared
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _inter_name(part):
    return f"{DATASET}.{part}.inter"


def _is_uint(token):
    return token.isascii() and token.isdigit()


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _shown(line):
    return repr(line if len(line) <= 60 else line[:57] + "...")
