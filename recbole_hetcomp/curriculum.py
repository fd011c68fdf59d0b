"""Alias of :mod:`recbole_hetcomp.distill.curriculum`, kept at the path the HETCOMP spec names
(``recbole_hetcomp.curriculum.ranking_discrepancy``)."""

from recbole_hetcomp.distill.curriculum import Curriculum, dkc_step, ranking_discrepancy  # noqa: F401
