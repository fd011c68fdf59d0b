"""Our ``properties/`` yaml: where it lives, the keys it defines, and the small value checks
every layer above shares. Imports nothing of this package, so any adapter module can use it.
"""

import functools
from pathlib import Path

import yaml


def properties_dir():
    """Where our yaml defaults live: inside an installed wheel, or beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "properties", here.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"recbole_hetcomp: properties/overall.yaml not found beside {here}; reinstall the package"
    )


@functools.lru_cache(maxsize=None)
def our_keys():
    """Every key of our ``properties/`` yaml (overall, every model, every dataset)."""
    props = properties_dir()
    keys = set()
    for path in [props / "overall.yaml", *sorted((props / "model").glob("*.yaml")),
                 *sorted((props / "dataset").glob("*.yaml"))]:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):  # a dataset's ``<Model>.key`` line sets ``key``, whose spec is elsewhere
            keys.update(k for k in loaded if not (isinstance(k, str) and "." in k))
    return frozenset(keys)


def positive_int(config, key):
    """``config[key]``, which must be a positive integer (not a bool); ``ValueError`` otherwise."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: must be an integer > 0")
    return value
