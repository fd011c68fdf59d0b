"""``HetCompEnsemble``: the teacher ensemble g as a RecBole model.

It holds no learned parameters: ``full_sort_predict`` fuses the stored top-N lists of the
chosen trajectory point of every teacher (the final points by default), so RecBole's
evaluator scores the ensemble with exactly the split, masking and metrics it uses for
any single model. Items in no teacher's list score 0, listed items score > 0.
"""

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_hetcomp.distill.curriculum import gather_points
from recbole_hetcomp.distill.ensemble import ensemble_scores, importance_from_config, teacher_weight_vector
from recbole_hetcomp.distill.fit import PARAMETER


class HetCompEnsemble(GeneralRecommender):
    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL

    def __init__(self, config, dataset, trajectories=None, points=None, fusion=None):
        """``trajectories``: list of :class:`~recbole_hetcomp.trajectories.store.Trajectory`, one per teacher.
        ``points``: optional long [M, U] point per teacher and user (default: each final point).
        ``fusion``: a :class:`~recbole_hetcomp.distill.fit.Fusion` naming these teachers (a fitted one);
        by default the config's ``teacher_weights`` and importance."""
        super().__init__(config, dataset)
        if not trajectories:
            raise ValueError("HetCompEnsemble needs the teachers' trajectories: build it with trajectories=[...]")
        self.teacher_names = [t.teacher for t in trajectories]
        for t in trajectories:
            if t.n_users != self.n_users:
                raise ValueError(f"teacher {t.teacher} has {t.n_users} users, the dataset has {self.n_users}")
        if fusion is None:
            self.imp = importance_from_config(config)
            weights = teacher_weight_vector(self.teacher_names, config["teacher_weights"])
        else:
            by_name = dict(zip(fusion.teachers, fusion.weights))
            self.imp = {"kind": fusion.kind, PARAMETER[fusion.kind]: fusion.param}
            weights = torch.tensor([float(by_name[n]) for n in self.teacher_names], dtype=torch.float32)
        self.register_buffer("weights", weights)
        if points is None:
            lists = torch.stack([t.top[-1] for t in trajectories])                       # [M, U, N]
        else:
            lists = gather_points(torch.stack([t.top for t in trajectories]), points)   # [M, U, N]
        self.register_buffer("lists", lists.to(torch.int32))  # the store's dtype: half of long's memory
        self.fake_loss = nn.Parameter(torch.zeros(1))  # RecBole's trainer needs one parameter

    def calculate_loss(self, interaction):
        return self.fake_loss.sum() * 0.0

    def _scores(self, users):
        return ensemble_scores(self.lists[:, users], self.n_items, self.weights, **self.imp)

    def predict(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return self._scores(users).gather(1, items.unsqueeze(1)).squeeze(1)

    def full_sort_predict(self, interaction):
        return self._scores(interaction[self.USER_ID]).view(-1)
