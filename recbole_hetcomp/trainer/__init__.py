"""Our trainers. ``TRAINERS`` maps ``<Model>Trainer`` names to classes for :func:`recbole_hetcomp.registry.get_trainer`."""

from recbole_hetcomp.trainer.base import CheckpointMixin, bound_pair_batches, load_checkpoint
from recbole_hetcomp.trainer.hetcomp import HetCompTrainer
from recbole_hetcomp.trainer.trajectory import TrajectoryMixin, trajectory_trainer

TRAINERS = {"HetCompTrainer": HetCompTrainer}

__all__ = ["TRAINERS", "HetCompTrainer", "CheckpointMixin", "TrajectoryMixin", "bound_pair_batches", "load_checkpoint",
           "trajectory_trainer"]
