"""Our general recommenders: each a teacher by name (through ``MODELS``) and a student architecture
(``student: <Name>``, :func:`recbole_hetcomp.model.hetcomp.student_class`), from this one list."""

from recbole_hetcomp.model.cml import CML
from recbole_hetcomp.model.lightgcn import LightGCN

GENERAL = {"CML": CML, "LightGCN": LightGCN}


def by_name(models, name):
    """The class ``models`` holds under ``name``, matched regardless of case as RecBole matches model names (``lightgcn``
    is ``LightGCN``); None when it holds none. The one case-insensitive lookup of our models, for
    :func:`recbole_hetcomp.registry.get_model` and :func:`recbole_hetcomp.model.hetcomp.student_class`."""
    wanted = str(name).lower()
    return next((cls for key, cls in models.items() if key.lower() == wanted), None)
