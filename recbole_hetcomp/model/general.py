"""Our general recommenders: each a teacher by name (through ``MODELS``) and a student architecture
(``student: <Name>``, :func:`recbole_hetcomp.model.hetcomp.student_class`), from this one list."""

from recbole_hetcomp.model.cml import CML
from recbole_hetcomp.model.lightgcn import LightGCN

GENERAL = {"CML": CML, "LightGCN": LightGCN}
