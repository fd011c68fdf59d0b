"""Trainers that train a teacher exactly as RecBole would and record its trajectory.

``trajectory_trainer(base)`` returns ``base`` (the trainer RecBole picks for the model:
``Trainer``, ``TraditionalTrainer``, ...) with :class:`TrajectoryMixin` in front. The mixin
overrides two hooks: ``_valid_epoch`` (open and close a recording) and
``_full_sort_batch_eval`` (hand each batch's masked scores to the recorder). Training,
early stopping and checkpointing are RecBole's own.
"""

import functools

import numpy as np
import torch

from recbole_hetcomp.trainer.base import CheckpointMixin, full_sort_scorer


class TrajectoryMixin(CheckpointMixin):
    recorder = None  # a TrajectoryRecorder, set before fit()

    def _valid_epoch(self, valid_data, show_progress=False):
        if self.recorder is None:
            return super()._valid_epoch(valid_data, show_progress=show_progress)
        self.recorder.begin()
        try:
            score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        except BaseException:
            self.recorder.abort()
            raise
        epoch = max(self.train_loss_dict) if self.train_loss_dict else -1
        self.recorder.commit(epoch, score)
        return score, result

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.recorder is not None and self.recorder.active:
            self.recorder.capture(interaction[self.config["USER_ID_FIELD"]], scores)
        return interaction, scores, positive_u, positive_i

    @torch.no_grad()
    def rank_all_users(self, train_dataset, top_n):
        """With the model as it is now, every user's top-N unobserved items and ranked training items.

        Returns (int32 [U, N] top lists, int32 [nnz] ranked training items, int64 [U + 1] offsets);
        row 0 (RecBole's padding user) is all zeros.
        """
        self.model.eval()
        csr = train_dataset.inter_matrix(form="csr")
        indptr = torch.from_numpy(csr.indptr.astype(np.int64))
        indices = torch.from_numpy(csr.indices.astype(np.int64))
        n_users, n_items = train_dataset.user_num, train_dataset.item_num
        score = full_sort_scorer(self, train_dataset)
        top = torch.zeros(n_users, top_n, dtype=torch.int32)
        obs_items = torch.zeros(indices.numel(), dtype=torch.int32)
        step = max(1, self.config["eval_batch_size"] // n_items)
        recorder, self.recorder = self.recorder, None
        try:
            for a in range(1, n_users, step):
                b = min(a + step, n_users)
                scores = score(torch.arange(a, b))
                lo, hi = int(indptr[a]), int(indptr[b])
                rows = torch.repeat_interleave(torch.arange(b - a), indptr[a + 1:b + 1] - indptr[a:b]).to(scores.device)
                cols = indices[lo:hi].to(scores.device)
                obs_scores = scores[rows, cols]
                order = torch.argsort(-obs_scores, stable=True)
                order = order[torch.argsort(rows[order], stable=True)]
                obs_items[lo:hi] = cols[order].to("cpu", torch.int32)
                scores[rows, cols] = -np.inf
                top[a:b] = torch.topk(scores, top_n, dim=1).indices.to("cpu", torch.int32)
        finally:
            self.recorder = recorder
        return top, obs_items, indptr


@functools.lru_cache(maxsize=None)
def trajectory_trainer(base):
    """``base`` trainer class with trajectory recording in front of it."""
    return type(f"Trajectory{base.__name__}", (TrajectoryMixin, base), {"__module__": __name__})
