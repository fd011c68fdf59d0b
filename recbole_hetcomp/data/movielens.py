"""MovieLens from the official GroupLens archives, converted to RecBole's atomic format.

RecBole reads a dataset ``<name>`` from ``<data_path>/<name>/<name>.inter``, a
tab-separated file whose header is::

    user_id:token	item_id:token	rating:float	timestamp:float

RecBole can download some datasets itself, but its servers are unreliable, so
:func:`ensure_dataset` builds that file from the archives GroupLens publishes at
``https://files.grouplens.org/datasets/movielens/<name>.zip``. The four versions
handled (:data:`MOVIELENS`) differ in where the ratings are and how they are written:

=========  =========================  ==========================================
name       ratings member in the zip  format of a line
=========  =========================  ==========================================
ml-100k    ``ml-100k/u.data``         ``user<TAB>item<TAB>rating<TAB>timestamp``
ml-1m      ``ml-1m/ratings.dat``      ``UserID::MovieID::Rating::Timestamp``
ml-10m     ``ml-10M100K/ratings.dat`` same ``::`` format (the zip is ``ml-10m.zip``)
ml-20m     ``ml-20m/ratings.csv``     header ``userId,movieId,rating,timestamp``,
                                      then comma-separated lines
=========  =========================  ==========================================

Where the data comes from, first match wins:

1. ``archive``, a path the user gives: a ``.zip`` (the official archive) or the
   ratings file itself (``ratings.dat``, ``u.data``, ``ratings.csv``);
2. ``<data_root>/<name>.zip``;
3. ``<data_root>/<name>/<name>.zip``;
4. the ratings file unpacked under the data root: ``<data_root>/<name>/<file>``
   (``data/ml-1m/ratings.dat``, ``data/ml-100k/u.data``, ``data/ml-20m/ratings.csv``),
   or where unzipping the archive into the data root puts it
   (``data/ml-10M100K/ratings.dat``), or unzipped into the dataset's folder
   (``data/ml-1m/ml-1m/ratings.dat``);
5. with ``download=True``, the official zip, downloaded to ``<data_root>/<name>.zip``
   (through a temporary file renamed into place, so an interrupted download never
   leaves a half zip under the final name).

Offline, or with ``download=False``, and with nothing local, :func:`ensure_dataset`
raises :class:`FileNotFoundError` with one line saying what to download and where to
put it.

Conversion streams the ratings line by line (ml-20m has 20 million lines; nothing is
held in memory but the current block of output) and checks every line: the separator,
four fields, integer user and item ids, finite numeric rating and timestamp. A bad
line raises :class:`ValueError` naming the file, the line number and the fix. So do an
empty ratings file, a header where none belongs (only ml-20m has one, and it must be
there), a zip without the ratings member, and a truncated or corrupt zip. The
``.inter`` is written to ``<name>.inter.tmp`` beside it and renamed into place only
once everything has been read, so a failed conversion leaves neither file behind and
a later call starts again from scratch. A conversion runs once: when the ``.inter``
exists it is returned as it is.

Ids stay the original MovieLens ids, as tokens; ratings and timestamps are written as
floats (``5.0``, ``978300760.0``), as the header declares.

:func:`count_interactions` counts users, items and rows of an ``.inter`` file, to check
a conversion against the published statistics kept in :data:`MOVIELENS` (ml-1m:
6,040 users, 3,706 items, 1,000,209 interactions).
"""

import http.client
import logging
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

logger = logging.getLogger(__name__)

BASE_URL = "https://files.grouplens.org/datasets/movielens/"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
DOWNLOAD_TIMEOUT = 60  # seconds, per blocking socket operation
_ZIP_MAGIC = b"PK\x03\x04"
_BLOCK = 65536  # output lines gathered before each write


def _spec(name, folder, member, sep, fmt, header=None, users=None, items=None, interactions=None):
    return {
        "url": f"{BASE_URL}{name}.zip",
        "folder": folder,  # the top folder inside the zip
        "member": f"{folder}/{member}",  # the ratings file inside the zip
        "filename": member,  # the ratings file's own name
        "sep": sep,
        "format": fmt,  # a line's fields, for messages
        "header": header,  # the first line, or None where the file has none
        "users": users,
        "items": items,
        "interactions": interactions,
    }


#: name -> where the ratings are, how they are written, and the published counts
#: (users and items that have at least one rating; None where not known).
MOVIELENS = {
    "ml-100k": _spec("ml-100k", "ml-100k", "u.data", "\t", "user<TAB>item<TAB>rating<TAB>timestamp",
                     users=943, items=1682, interactions=100_000),
    "ml-1m": _spec("ml-1m", "ml-1m", "ratings.dat", "::", "UserID::MovieID::Rating::Timestamp",
                   users=6040, items=3706, interactions=1_000_209),
    "ml-10m": _spec("ml-10m", "ml-10M100K", "ratings.dat", "::", "UserID::MovieID::Rating::Timestamp",
                    users=69_878, items=10_677, interactions=10_000_054),
    "ml-20m": _spec("ml-20m", "ml-20m", "ratings.csv", ",", "userId,movieId,rating,timestamp",
                    header="userId,movieId,rating,timestamp",
                    users=138_493, items=26_744, interactions=20_000_263),
}


def ensure_dataset(dataset, data_root, archive=None, download=True, opener=None):
    """Make sure ``<data_root>/<dataset>/<dataset>.inter`` exists; return its path.

    Returns the existing ``.inter`` untouched when there is one, None when ``dataset`` is
    not a MovieLens name of :data:`MOVIELENS`, and otherwise the path of the ``.inter``
    converted from the first source found (see the module docstring). ``opener(url,
    timeout=...)`` fetches the official zip (default :func:`urllib.request.urlopen`).

    Raises FileNotFoundError when there is no source (offline, or ``download=False``),
    and ValueError when the source is malformed; neither leaves an ``.inter`` behind.
    """
    root = Path(data_root)
    inter = root / dataset / f"{dataset}.inter"
    if inter.is_file():
        return inter
    spec = MOVIELENS.get(dataset)
    if spec is None:
        return None

    source = _find_source(dataset, spec, root, archive)
    if source is None:
        if not download:
            raise FileNotFoundError(f"{_missing(dataset, spec, root)} (download=False)")
        source = _download(dataset, spec, root, opener)
    _convert(dataset, spec, source, inter)
    return inter


def count_interactions(inter_path):
    """(distinct users, distinct items, rows) of an atomic ``.inter`` file."""
    users, items, rows = set(), set(), 0
    with open(inter_path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        try:
            u_col = header.index("user_id:token")
            i_col = header.index("item_id:token")
        except ValueError:
            raise ValueError(
                f"{inter_path}: line 1 is not an atomic .inter header with user_id:token and "
                f"item_id:token: {header!r}"
            ) from None
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            users.add(fields[u_col])
            items.add(fields[i_col])
            rows += 1
    return len(users), len(items), rows


# ---------------------------------------------------------------------------- sources


def _find_source(dataset, spec, root, archive):
    """The first local source: a Path (zip or ratings file), or None."""
    if archive is not None:
        path = Path(archive)
        if not path.is_file():
            raise FileNotFoundError(
                f"{dataset}: the archive {path} does not exist: give the path of {dataset}.zip "
                f"or of its {spec['filename']}"
            )
        return path
    candidates = [
        root / f"{dataset}.zip",
        root / dataset / f"{dataset}.zip",
        root / dataset / spec["filename"],
        root / spec["member"],  # data/ml-10M100K/ratings.dat: the zip unpacked into data/
        root / dataset / spec["member"],  # data/ml-1m/ml-1m/ratings.dat
    ]
    for path in candidates:
        if path.is_file():
            return path
    return None


def _missing(dataset, spec, root):
    return (
        f"{dataset} is not in {_folder(root)}: download {spec['url']} and put it at "
        f"{root / (dataset + '.zip')} (or its {spec['filename']} at "
        f"{root / dataset / spec['filename']}), or pass --archive PATH"
    )


def _folder(root):
    text = str(root)
    return text if text.endswith(os.sep) else text + os.sep


def _download(dataset, spec, root, opener):
    """Fetch the official zip to ``<root>/<dataset>.zip``; FileNotFoundError when that fails."""
    opener = urllib.request.urlopen if opener is None else opener
    target = root / f"{dataset}.zip"
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dataset}.", suffix=".zip.part", dir=root)
    logger.info("downloading %s to %s", spec["url"], target)
    try:
        with os.fdopen(fd, "wb") as out:
            with opener(spec["url"], timeout=DOWNLOAD_TIMEOUT) as response:
                shutil.copyfileobj(response, out)
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, HTTPError, socket timeouts and connection resets are all OSErrors;
        # IncompleteRead is an HTTPException. Only the archive itself may be left behind.
        _unlink(tmp)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise FileNotFoundError(f"{_missing(dataset, spec, root)} (download failed: {reason})") from exc
    except BaseException:
        _unlink(tmp)
        raise
    return target


# ------------------------------------------------------------------------- conversion


def _is_zip(path):
    if path.suffix.lower() == ".zip":
        return True
    with open(path, "rb") as f:
        return f.read(4) == _ZIP_MAGIC


def _convert(dataset, spec, source, inter):
    """Write ``inter`` from ``source`` (a zip or a ratings file), atomically."""
    folder = inter.parent
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{inter.name}.tmp"
    logger.info("converting %s to %s", source, inter)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            if _is_zip(source):
                _convert_zip(dataset, spec, source, out)
            else:
                with open(source, "rb") as raw:
                    _convert_lines(dataset, spec, raw, str(source), out,
                                   fix=f"fix the file or use the official {spec['url']}")
        os.replace(tmp, inter)
    except BaseException:
        _unlink(tmp)
        if made_folder:
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                pass
        raise


def _convert_zip(dataset, spec, source, out):
    bad_zip = (
        f"{source} is not a valid zip archive (truncated download?): delete it and download "
        f"{spec['url']} again"
    )
    try:
        with zipfile.ZipFile(source) as zf:
            try:
                info = zf.getinfo(spec["member"])
            except KeyError:
                raise ValueError(
                    f"{source} has no {spec['member']}: it is not the {dataset} archive; "
                    f"download {spec['url']}"
                ) from None
            with zf.open(info) as raw:
                _convert_lines(dataset, spec, raw, f"{source}:{spec['member']}", out,
                               fix=f"delete {source} and download {spec['url']} again")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(bad_zip) from exc


def _convert_lines(dataset, spec, raw, where, out, fix):
    """Check and write every line of the binary stream ``raw`` to ``out``."""
    sep = spec["sep"]
    header = spec["header"]
    rows = 0
    block = [INTER_HEADER + "\n"]
    number = 0
    for number, line in enumerate(raw, 1):
        # latin-1 maps every byte, so garbage surfaces as a bad field with its line number
        line = line.decode("latin-1").rstrip("\r\n")
        if number == 1 and header is not None:
            if line.strip() != header:
                raise ValueError(
                    f"{where} line 1: expected the header {header!r}, got {line[:60]!r}: "
                    f"this is not {dataset}'s {spec['filename']}; {fix}"
                )
            continue
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != 4:
            raise ValueError(_bad_fields(spec, where, number, line, fields, fix))
        user, item, rating, stamp = (field.strip() for field in fields)
        for label, token in (("user id", user), ("item id", item)):
            if not (token.isascii() and token.isdigit()):
                raise ValueError(_bad_value(dataset, spec, where, number, line, label, token, fix))
        rating_f = _number(rating)
        if rating_f is None:
            raise ValueError(_bad_value(dataset, spec, where, number, line, "rating", rating, fix))
        stamp_f = _number(stamp)
        if stamp_f is None:
            raise ValueError(_bad_value(dataset, spec, where, number, line, "timestamp", stamp, fix))
        block.append(f"{user}\t{item}\t{rating_f!r}\t{stamp_f!r}\n")
        rows += 1
        if len(block) >= _BLOCK:
            out.writelines(block)
            block.clear()
    if rows == 0:
        what = "only a header" if number and header is not None else "no ratings"
        raise ValueError(f"{where} has {what}: it is empty or truncated; {fix}")
    out.writelines(block)
    return rows


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shown(line):
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _bad_fields(spec, where, number, line, fields, fix):
    sep = spec["sep"]
    guess = ""
    for other, label in (("::", "'::'"), ("\t", "tab"), (",", "','"), (";", "';'")):
        if other != sep and other in line:
            guess = f" (it looks {label}-separated: another MovieLens version's file?)"
            break
    return (
        f"{where} line {number}: expected 4 fields separated by {sep!r} ({spec['format']}), "
        f"got {len(fields)}{guess}: {_shown(line)}; {fix}"
    )


def _bad_value(dataset, spec, where, number, line, label, token, fix):
    hint = ""
    if number == 1 and spec["header"] is None:
        hint = f" ({dataset}'s {spec['filename']} has no header line)"
    kind = "an integer" if label.endswith("id") else "a finite number"
    return (
        f"{where} line {number}: the {label} {token!r} is not {kind}{hint}: {_shown(line)}; {fix}"
    )


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
