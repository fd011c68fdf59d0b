"""Alias of :mod:`recbole_hetcomp.distill.losses`, kept at the path the HETCOMP spec names
(``recbole_hetcomp.losses.overall_loss`` / ``rank_loss``)."""

from recbole_hetcomp.distill.losses import factorised_loss, overall_loss, rank_loss  # noqa: F401
