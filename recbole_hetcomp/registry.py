"""Model and trainer lookup (our package first, RecBole's otherwise) and parameter counting.

Plugin models live in :mod:`recbole_hetcomp.model` and are listed in its
``MODELS`` dict; plugin trainers in :mod:`recbole_hetcomp.trainer` (``TRAINERS``).
"""

import difflib
import functools
import importlib
import importlib.util
import pkgutil

import torch
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


@functools.lru_cache(maxsize=None)
def recbole_model_names():
    """Every model class name RecBole ships, by family (``general_recommender`` -> [names])."""
    names = {}
    for sub in _RECBOLE_MODEL_PACKAGES:
        # find_spec locates the sub-package without running its __init__ (which imports
        # optional libraries such as lightgbm).
        spec = importlib.util.find_spec(f"recbole.model.{sub}")
        names[sub] = sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations))
    return names


def _plugin_models():
    from recbole_hetcomp.model import MODELS

    return MODELS


def get_model(model_name):
    """Return the model class called ``model_name``: ours first, then RecBole's.

    The lookup is case-insensitive. An unknown name raises ``ValueError`` that suggests close matches.
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model name must be a non-empty string, got {model_name!r}")
    from recbole_hetcomp.model.general import by_name

    plugin = _plugin_models()
    ours = by_name(plugin, model_name)
    if ours is not None:
        return ours
    module_name = model_name.lower()
    for sub, modules in recbole_model_names().items():
        if module_name in modules:
            anomaly = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
            module = importlib.import_module(f"recbole.model.{sub}.{module_name}")
            # RecBole's SINE turns autograd's anomaly detection on when its package is imported, which would slow
            # every backward pass after it (a sequential model's lookup imports that package): put it back as found
            torch.autograd.set_detect_anomaly(*anomaly)
            for attr in dir(module):
                obj = getattr(module, attr)
                if attr.lower() == module_name and isinstance(obj, type):
                    return obj
    known = list(plugin) + [
        m for mods in recbole_model_names().values() for m in mods
    ]
    # once each: our LightGCN shares its name with RecBole's
    close = difflib.get_close_matches(module_name, list(dict.fromkeys(k.lower() for k in known)), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model '{model_name}': it is neither a recbole_hetcomp model "
        f"({', '.join(sorted(plugin))}) nor a RecBole model.{hint}"
    )


def is_general_model(model_class):
    """True for models that rank all items for a user (RecBole's general and traditional families)."""
    return getattr(model_class, "type", None) in (ModelType.GENERAL, ModelType.TRADITIONAL)


def get_trainer(model_type, model_name):
    """Return ``<model_name>Trainer`` from our package if it exists, RecBole's choice otherwise."""
    from recbole_hetcomp.trainer import TRAINERS

    own = TRAINERS.get(f"{model_name}Trainer")
    if own is not None:
        return own
    return recbole_get_trainer(model_type, model_name)


# Entries of RecBole's ``other_parameter()`` that cache training data or copies of learned weights rather than
# weights: LightGCN's (and NGCF's, ...) full-catalogue embeddings, filled by its full_sort_predict.
_DATA_CACHES = ("interaction_matrix", "pred_mat", "restore_user_e", "restore_item_e")


def count_parameters(model):
    """Learned numbers a model keeps: its trainable tensors, plus the fitted arrays that one-shot
    models (EASE, ItemKNN, SLIM, Pop) keep outside ``nn.Parameter``s (sparse ones by non-zeros).
    RecBole's one-element ``fake_loss`` placeholder, cached training data and cached embeddings are not counted."""
    total = sum(p.numel() for name, p in model.named_parameters() if name != "fake_loss")
    for name, value in (model.other_parameter() or {}).items():
        if name in _DATA_CACHES:
            continue
        if hasattr(value, "nnz"):
            total += int(value.nnz)
        elif hasattr(value, "numel"):
            total += int(value.numel())
        elif hasattr(value, "size") and not callable(value.size):
            total += int(value.size)
    return total
