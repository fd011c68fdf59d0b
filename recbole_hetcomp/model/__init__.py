"""Our models. ``MODELS`` maps each model name to its class for :func:`recbole_hetcomp.registry.get_model`."""

from recbole_hetcomp.model.cml import CML
from recbole_hetcomp.model.ensemble import HetCompEnsemble
from recbole_hetcomp.model.hetcomp import HetComp

MODELS = {"CML": CML, "HetComp": HetComp, "HetCompEnsemble": HetCompEnsemble}

__all__ = ["MODELS", "CML", "HetComp", "HetCompEnsemble"]
