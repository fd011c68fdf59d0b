"""Hyper-parameter search spaces: yaml files under ``properties/hyper/``, turned into Ray Tune's API.

A search space is a yaml mapping from a config key to either a fixed value or one
distribution, written as a one-key mapping::

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # tune.loguniform(low, high)
    dkc_alpha: {uniform: [1.01, 1.2]}               # tune.uniform(low, high)
    hetcomp_p: {randint: [5, 21]}                   # tune.randint(low, high): high excluded
    embedding_size: {choice: [4, 6, 8]}             # tune.choice(values)
    ensemble_importance: {grid: [exp, rrf]}         # tune.grid_search(values): every value, each
                                                    #   crossed with num_samples draws of the rest
    epochs: 300                                     # a fixed value for every trial

Parsing and checking (:func:`load_search_space`) need no Ray, so a bad file is reported
before Ray starts; :func:`to_tune` builds the Ray Tune domains. Every problem raises
``ValueError`` naming the file, the key and the fix.
"""

import difflib
import math
from pathlib import Path

import yaml

from recbole_hetcomp.settings import properties_dir

DISTRIBUTIONS = {
    # name: (number of arguments, or None for a non-empty list; description)
    "uniform": (2, "[low, high] floats, low < high"),
    "loguniform": (2, "[low, high] floats, 0 < low < high"),
    "randint": (2, "[low, high] integers, low < high (high excluded)"),
    "choice": (None, "a non-empty list of values"),
    "grid": (None, "a non-empty list of values"),
}


def default_space_file(model):
    """``properties/hyper/<model>.yaml`` (lower case), the space ``--tune`` uses without ``--search_space``."""
    return properties_dir() / "hyper" / f"{model.lower()}.yaml"


def load_search_space(path, known_keys=None):
    """Read and check a search space; returns ``{key: ("fixed", value) | (distribution, args)}``.

    ``known_keys``, if given, are the config keys of the model being tuned: a key outside them
    is a typo (close matches are suggested).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space {path} does not exist: give an existing yaml file with --search_space")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"search space {path} is not valid yaml{where}: fix its syntax") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"search space {path} must be a non-empty mapping 'key: {{distribution: [args]}}'")
    space = {}
    for key, value in raw.items():
        if known_keys is not None and key not in known_keys:
            close = difflib.get_close_matches(str(key), list(known_keys), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"search space {path}: '{key}' is not a config key of this model{hint}")
        space[key] = _parse(path, key, value)
    if all(kind == "fixed" for kind, _ in space.values()):
        raise ValueError(f"search space {path} fixes every key: give at least one distribution")
    return space


def _parse(path, key, value):
    if not isinstance(value, dict):
        return ("fixed", value)
    if len(value) != 1:
        raise ValueError(f"search space {path}: '{key}' must name exactly one distribution "
                         f"({', '.join(DISTRIBUTIONS)}), got {sorted(value)}")
    (name, args), = value.items()
    if name not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(name), list(DISTRIBUTIONS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"search space {path}: '{key}' uses unknown distribution '{name}'{hint}; "
                         f"supported: {', '.join(DISTRIBUTIONS)}")
    n_args, wanted = DISTRIBUTIONS[name]
    bad = ValueError(f"search space {path}: '{key}: {{{name}: {args!r}}}' needs {wanted}")
    if not isinstance(args, list) or not args or (n_args is not None and len(args) != n_args):
        raise bad
    if name in ("uniform", "loguniform"):
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args):
            raise bad
        low, high = map(float, args)
        if not low < high or (name == "loguniform" and low <= 0):
            raise bad
        args = [low, high]
    elif name == "randint":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or not args[0] < args[1]:
            raise bad
    return (name, list(args))


def to_tune(space):
    """Ray Tune's ``param_space`` for a checked space."""
    from ray import tune

    build = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
    }
    return {key: (args if kind == "fixed" else build[kind](args)) for key, (kind, args) in space.items()}


def choices_of(space, key):
    """Every value ``key`` can take in ``space`` (fixed, choice or grid), or None if not searched that way."""
    if key not in space:
        return None
    kind, args = space[key]
    if kind == "fixed":
        return [args]
    if kind in ("choice", "grid"):
        return list(args)
    return None
