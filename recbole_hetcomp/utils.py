"""Alias of :mod:`recbole_hetcomp.registry`, kept at the path RecBole plugins use for the lookup
(``from recbole_hetcomp.utils import get_model, get_trainer``, as in ``recbole_gnn.utils``)."""

from recbole_hetcomp.registry import count_parameters, get_model, get_trainer, is_general_model  # noqa: F401
