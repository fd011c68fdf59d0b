"""Recording a teacher's trajectory while it trains (spec section 2).

During every validation pass the recording trainer hands each batch's masked scores
to a :class:`TrajectoryRecorder`, which keeps the batch users' top-N unobserved items
(a ``topk`` on scores RecBole computed anyway). After training, the points kept are the
first evaluations whose validation score reaches each fraction of the best score
(``trajectory_milestones``); the last point is the converged, best-validation teacher.

Only snapshots that may still become a milestone are held in memory: at least as high
as every earlier score (the first evaluation reaching any fraction is one), and no lower
than ``min(milestones) * best so far``.
"""

import torch

_EXAMPLE = "write e.g. --trajectory_milestones=[0.25,0.5,0.75,1.0]"


def check_milestones(fractions):
    """Validate ``trajectory_milestones``; returns them as a list of floats."""
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(f"trajectory_milestones must be a list of numbers, got {fractions!r}; {_EXAMPLE}") from None
    if not values:
        raise ValueError(f"trajectory_milestones is empty; {_EXAMPLE}")
    if any(not 0.0 < f <= 1.0 for f in values):
        raise ValueError(f"trajectory_milestones {values} must lie in (0, 1]; {_EXAMPLE}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"trajectory_milestones {values} must be strictly increasing; {_EXAMPLE}")
    if values[-1] != 1.0:
        raise ValueError(f"trajectory_milestones {values} must end with 1.0 (the converged teacher); {_EXAMPLE}")
    return values


def select_milestones(scores, fractions):
    """Index of the first score reaching each fraction (< 1) of the best score.

    ``scores`` are validation scores in evaluation order (bigger is better). The index
    for 1.0 is the *last* evaluation scoring the best, because RecBole's early stopping
    updates its checkpoint on ``value >= best``: that evaluation is the converged teacher.
    """
    if len(scores) == 0:
        raise ValueError("no validation score was recorded: the teacher was never evaluated")
    best = max(scores)
    last_best = max(i for i, s in enumerate(scores) if s == best)
    return [last_best if f >= 1.0 else next(i for i, s in enumerate(scores) if s >= f * best)
            for f in fractions]


class TrajectoryRecorder:
    """Collects top-N lists during validation passes and picks the milestone points."""

    def __init__(self, n_users, top_n, fractions):
        self.n_users = n_users
        self.top_n = top_n
        self.fractions = check_milestones(fractions)
        self.epochs = []          # epoch of every evaluation
        self.scores = []          # validation score of every evaluation
        self.snapshots = {}       # evaluation index -> (int32 [U, N] lists, bool [U] filled)
        self._pending = None

    @property
    def active(self):
        return self._pending is not None

    def begin(self):
        self._pending = (torch.zeros(self.n_users, self.top_n, dtype=torch.int32),
                         torch.zeros(self.n_users, dtype=torch.bool))

    def capture(self, users, masked_scores):
        """Keep the top-N of ``masked_scores`` (float [B, I], observed items at -inf) for ``users``."""
        top = torch.topk(masked_scores, self.top_n, dim=1).indices
        lists, filled = self._pending
        users = users.cpu()
        lists[users] = top.to("cpu", torch.int32)
        filled[users] = True

    def commit(self, epoch, score):
        """Close the current validation pass with its epoch and validation score."""
        pending, self._pending = self._pending, None
        best_before = max(self.scores, default=float("-inf"))
        self.epochs.append(int(epoch))
        self.scores.append(float(score))
        if score >= best_before and pending is not None:
            self.snapshots[len(self.scores) - 1] = pending
        floor = min(self.fractions) * max(self.scores)
        for idx in [i for i in self.snapshots if self.scores[i] < floor]:
            del self.snapshots[idx]

    def abort(self):
        self._pending = None

    def points(self, final_top):
        """Stack the milestone points into int32 [T, U, N].

        ``final_top`` (int32 [U, N]) is the converged teacher's list for every user, from a
        full pass after training; it is the last point and fills in users that a
        validation pass did not cover (users without validation items).
        """
        chosen = select_milestones(self.scores, self.fractions)
        out = []
        for idx in chosen:
            lists, filled = self.snapshots[idx]
            out.append(torch.where(filled.unsqueeze(1), lists, final_top))
        out[-1] = final_top
        return torch.stack(out), chosen
