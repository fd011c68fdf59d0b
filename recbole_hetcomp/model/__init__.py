"""Our models. ``MODELS`` maps each model name to its class for :func:`recbole_hetcomp.registry.get_model`."""

from recbole_hetcomp.model.cml import CML
from recbole_hetcomp.model.ensemble import HetCompEnsemble
from recbole_hetcomp.model.general import GENERAL
from recbole_hetcomp.model.hetcomp import HetComp
from recbole_hetcomp.model.lightgcn import LightGCN

MODELS = {**GENERAL, "HetComp": HetComp, "HetCompEnsemble": HetCompEnsemble}

__all__ = ["MODELS", "CML", "HetComp", "HetCompEnsemble", "LightGCN"]
