"""recbole-hetcomp: HetComp (Kang et al., WWW 2023) ensemble distillation as a RecBole plugin.

Importing the package is cheap: it pulls in neither ray nor ``recbole.quick_start``.
"""

__version__ = "0.2.0.dev0"
