"""The value schema: every config key's type and range, checked before anything is written or trained.

One notation, written once. Our keys carry it in their yaml comment (``properties/overall.yaml``,
``properties/model/*.yaml``, ``properties/dataset/*.yaml``): ``key: value  # (int > 0) what it does``.
The RecBole keys a run of ours uses carry it in ``properties/schema.yaml``, whose values are the
specs themselves (that file sets nothing). A spec is one or more alternatives joined by ``or``:

- ``int``, ``float``, optionally with ``> x``, ``>= x``, ``< x``, ``<= x`` or ``in [a, b]`` (``(``/``)`` for open ends);
- ``bool``; ``str``, or ``str: a | b | c`` for a choice;
- ``list`` / ``dict``, or ``list of <spec>`` / ``dict of <spec>`` for their items / values;
- ``None`` (``~`` in yaml).

:func:`check_values` checks a built config against the schema and a few rules that tie keys
together (``valid_metric`` among the computed metrics at a computed cut-off, known metric names,
``eval_args``, negative sampling). A bad value raises ``ValueError`` with one line,
``<key>=<value>: must be <what it must be>``.
"""

import functools
import math
import re
from dataclasses import dataclass

import yaml

from recbole_hetcomp.settings import properties_dir

_KEY_LINE = re.compile(r"^([A-Za-z_]\w*)\s*:.*?#\s*\(([^)]*)\)")
_BASE = re.compile(r"^(int|float|bool|str|list|dict|None)\b(.*)$")
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e-?\d+)?"
_BOUND = re.compile(rf"^(>=|>|<=|<)\s*({_NUMBER})$")
_INTERVAL = re.compile(rf"^in\s*([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([\])])$")


@dataclass(frozen=True)
class Alternative:
    kind: str                  # int, float, bool, str, list, dict or None
    low: float = None
    low_open: bool = False
    high: float = None
    high_open: bool = False
    choices: tuple = ()
    item: "Spec" = None        # list of / dict of

    def accepts(self, value):
        if self.kind == "None":
            return value is None
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind == "float" else int):
                return False
            if self.kind == "float" and not math.isfinite(value):
                return False
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                return False
            return self.high is None or not (value > self.high or (self.high_open and value == self.high))
        if self.kind == "str":
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if self.kind == "list":
            return isinstance(value, (list, tuple)) and (self.item is None or all(self.item.accepts(v) for v in value))
        return isinstance(value, dict) and (self.item is None or all(self.item.accepts(v) for v in value.values()))

    def describe(self, plural=False):
        if self.kind == "None":
            return "None (~ in yaml)"
        if self.kind == "bool":
            return "True or False"
        if self.kind == "str":
            return f"one of {', '.join(self.choices)}" if self.choices else ("strings" if plural else "a string")
        if self.kind in ("list", "dict"):
            head = {"list": "lists" if plural else "a list", "dict": "mappings" if plural else "a mapping"}[self.kind]
            if self.item is None:
                return head
            return f"{head} of {self.item.describe(plural=True)}" if self.kind == "list" else \
                f"{head} of names to {self.item.describe(plural=True)}"
        noun = ("integers" if plural else "an integer") if self.kind == "int" else ("numbers" if plural else "a number")
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {self.high:g}"
        return noun


@dataclass(frozen=True)
class Spec:
    text: str
    alternatives: tuple

    def accepts(self, value):
        return any(a.accepts(value) for a in self.alternatives)

    def describe(self, plural=False):
        return " or ".join(a.describe(plural) for a in self.alternatives)


def parse_spec(text):
    """A :class:`Spec` from its text (``'int > 0 or None'``); ``ValueError`` for one this notation lacks."""
    return Spec(text, tuple(_alternative(part.strip(), text) for part in re.split(r"\s+or\s+", text.strip())))


def _alternative(text, whole):
    match = _BASE.match(text)
    if not match:
        raise ValueError(f"bad type spec '({whole})': '{text}' starts with none of int, float, bool, str, list, "
                         "dict, None")
    kind, rest = match[1], match[2].strip()
    if not rest:
        return Alternative(kind)
    if kind in ("list", "dict") and rest.startswith("of "):
        return Alternative(kind, item=parse_spec(rest[3:]))
    if kind == "str" and rest.startswith(":"):
        return Alternative(kind, choices=tuple(c.strip() for c in rest[1:].split("|")))
    if kind in ("int", "float"):
        bound, interval = _BOUND.match(rest), _INTERVAL.match(rest)
        if bound:
            op, x = bound[1], float(bound[2])
            if op.startswith(">"):
                return Alternative(kind, low=x, low_open=op == ">")
            return Alternative(kind, high=x, high_open=op == "<")
        if interval:
            return Alternative(kind, low=float(interval[2]), low_open=interval[1] == "(",
                               high=float(interval[3]), high_open=interval[4] == ")")
    raise ValueError(f"bad type spec '({whole})': cannot read '{rest}' after '{kind}'")


def _yaml_files():
    props = properties_dir()
    return [props / "overall.yaml", *sorted((props / "model").glob("*.yaml")), *sorted((props / "dataset").glob("*.yaml"))]


@functools.lru_cache(maxsize=None)
def value_schema():
    """{key: Spec} of every key of our yaml (from its comment) and of ``properties/schema.yaml``.
    A key whose files disagree is an error (the test suite reads every file)."""
    found = {}
    for path in _yaml_files():
        for line in path.read_text().splitlines():
            match = _KEY_LINE.match(line)
            if match:
                found.setdefault(match[1], []).append((str(path), match[2].strip()))
    for key, text in (yaml.safe_load((properties_dir() / "schema.yaml").read_text()) or {}).items():
        found.setdefault(key, []).append(("properties/schema.yaml", str(text).strip()))
    schema = {}
    for key, places in found.items():
        texts = {t for _, t in places}
        if len(texts) > 1:
            raise ValueError(f"key {key} has different types in {', '.join(p for p, _ in places)}: "
                             f"{', '.join(sorted(texts))}")
        schema[key] = parse_spec(texts.pop())
    return schema


def _shown(value):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bad_value(key, value, must):
    return ValueError(f"{key}={_shown(value)}: must be {must}")


#: Keys RecBole's Config itself reads while it builds (its own checks there raise TypeError or
#: NotImplementedError): ours run first (see :meth:`recbole_hetcomp.config.Config._set_default_parameters`).
EARLY_KEYS = ("metrics", "topk", "valid_metric", "eval_args", "train_neg_sample_args")


def check_early(values):
    """The :data:`EARLY_KEYS` of a config's final dict, before RecBole reads them."""
    schema = value_schema()
    for key in EARLY_KEYS:
        if key in values and key in schema and not schema[key].accepts(values[key]):
            raise bad_value(key, values[key], schema[key].describe())
    check_metric_names(values.get("metrics"))


def check_values(config):
    """Check every key of ``config`` (a RecBole config) that the schema knows, then the rules across keys."""
    values = config.final_config_dict
    for key, spec in value_schema().items():
        if key in values and not spec.accepts(values[key]):
            raise bad_value(key, values[key], spec.describe())
    _check_metrics(values)
    _check_eval_args(values.get("eval_args"))
    _check_negative_sampling(values.get("train_neg_sample_args"))


def _known_metrics():
    from recbole.evaluator.register import metrics_dict

    return metrics_dict


def check_metric_names(metrics):
    """Every name in ``metrics`` (a name or a list) is a RecBole metric; returns the list."""
    names = [metrics] if isinstance(metrics, str) else list(metrics or [])
    known = _known_metrics()
    for name in names:
        if str(name).lower() not in known:
            raise bad_value("metrics", metrics, f"a list of RecBole metrics ({', '.join(sorted(known))})")
    return names


def _check_metrics(values):
    names = check_metric_names(values.get("metrics"))
    topk = values.get("topk")
    cutoffs = [topk] if isinstance(topk, int) else list(topk or [])
    valid = values.get("valid_metric")
    if valid is None or not names:
        return
    name, _, k = str(valid).partition("@")
    lowered = [str(n).lower() for n in names]
    ok = name.lower() in lowered and (k.isdigit() and int(k) in cutoffs if k else True)
    if not ok:
        example = f"{names[0]}@{cutoffs[-1]}" if cutoffs else names[0]
        raise bad_value("valid_metric", valid, f"one of metrics ({', '.join(map(str, names))}) at a cut-off of "
                                               f"topk ({', '.join(map(str, cutoffs))}), e.g. {example}")


def _check_eval_args(args):
    if args is None:
        return
    if not isinstance(args, dict):
        raise bad_value("eval_args", args, "a mapping with split, order, group_by and mode")
    split = args.get("split")
    if split is not None:
        if not isinstance(split, dict) or len(split) != 1 or next(iter(split)) not in ("RS", "LS"):
            raise bad_value("eval_args", args, "a mapping whose split is {RS: [train, valid, test]} or {LS: ...}")
        ratios = split.get("RS")
        if ratios is not None and not (isinstance(ratios, (list, tuple)) and len(ratios) in (2, 3)
                                       and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0
                                               for r in ratios) and sum(ratios) > 0):
            raise bad_value("eval_args", args, "a mapping whose split RS holds 3 ratios >= 0, e.g. [0.8, 0.1, 0.1]")
    if args.get("order", "RO") not in ("RO", "TO"):
        raise bad_value("eval_args", args, "a mapping whose order is RO (random) or TO (by time)")
    if args.get("group_by", "user") not in ("user", None, "none", "None"):
        raise bad_value("eval_args", args, "a mapping whose group_by is user or None")
    mode = args.get("mode", "full")
    modes = set(mode.values()) if isinstance(mode, dict) else {mode}
    if modes != {"full"}:
        raise bad_value("eval_args", args, "a mapping whose mode is full: teachers, ensemble and student rank the "
                                           "whole catalogue")


def _check_negative_sampling(args):
    """``sample_num`` (RecBole itself checks ``distribution``, in one line)."""
    if args is None or not isinstance(args, dict):
        return  # the schema said whether it may be None
    distribution = args.get("distribution", "uniform")
    n = args.get("sample_num", 1)
    if distribution != "none" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise bad_value("train_neg_sample_args", args, "a mapping whose sample_num is an integer > 0")
