"""Alias of :mod:`recbole_hetcomp.run.inference`, kept at its public path
(``recbole_hetcomp.inference.load_data_and_model``)."""

from recbole_hetcomp.run.inference import export_topk_csv, load_data_and_model, recommend_topk  # noqa: F401
