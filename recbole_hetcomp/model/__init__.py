"""Our models. ``MODELS`` maps each model name to its class for :func:`recbole_hetcomp.utils.get_model`."""

from recbole_hetcomp.model.cml import CML
from recbole_hetcomp.model.ensemble import HetCompEnsemble

MODELS = {"CML": CML, "HetCompEnsemble": HetCompEnsemble}

__all__ = ["MODELS", "CML", "HetCompEnsemble"]
