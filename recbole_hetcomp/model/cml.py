"""CML: Collaborative Metric Learning (Hsieh et al., WWW 2017).

Users and items are points in a Euclidean space, kept inside the unit ball; a
user's preference for an item is the negative squared distance between them.
Training pushes each observed item closer than a sampled negative by a margin:

    loss = mean( relu( margin + ||u - i||^2 - ||u - j||^2 ) )

The unit-ball constraint is applied as a projection inside every forward pass
(rows with norm above 1 are scaled back to 1), so training and ranking always
see the same, constrained points.
"""

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType
from torch import nn


class CML(GeneralRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.margin = config["margin"]
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.apply(xavier_normal_initialization)

    @staticmethod
    def _to_ball(points):
        return torch.renorm(points, p=2, dim=0, maxnorm=1.0)

    def _users(self, user):
        return self._to_ball(self.user_embedding(user))

    def _items(self, item):
        return self._to_ball(self.item_embedding(item))

    def forward(self, user, item):
        """Squared distance between each (user, item) pair."""
        return (self._users(user) - self._items(item)).pow(2).sum(dim=-1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        d_pos = self.forward(user, interaction[self.ITEM_ID])
        d_neg = self.forward(user, interaction[self.NEG_ITEM_ID])
        return torch.relu(self.margin + d_pos - d_neg).mean()

    def predict(self, interaction):
        return -self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        u = self._users(interaction[self.USER_ID])
        items = self._items(torch.arange(self.n_items, device=u.device))
        dist = u.pow(2).sum(1, keepdim=True) - 2.0 * u @ items.t() + items.pow(2).sum(1).unsqueeze(0)
        return (-dist).view(-1)
