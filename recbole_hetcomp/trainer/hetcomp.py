"""``HetCompTrainer``: RecBole's Trainer plus HetComp's schedule, in one overridden hook.

Before each training epoch, ``_train_epoch`` runs a DKC step when one is due (every
``dkc_period`` epochs from ``dkc_start``), rebuilds the ensemble target T(u) from the
teachers' current points, and chooses the loss: the overall loss while DKC is unfinished,
the rank loss once every (teacher, user) pair is at its final point (adaptive knowledge
transfer). Fitting, evaluation, early stopping and checkpoints are RecBole's.

Steps: RecBole's batches of ``train_batch_size`` interactions (the released code's), or with
``hetcomp_batch: users`` :class:`UserBatches`, every user once an epoch.

``kd_method`` other than ``hetcomp``: a ranking-KD baseline learns the final ensemble from the
first epoch (no DKC); this trainer then only sets what its loss changes per epoch (RD's warm-up,
CL-DRD's stages, DCD's discrepancies every ``dcd_refresh`` epochs).

Run modes: ``dkc: False`` starts every pair at the final point (ensemble distillation
without curriculum, rank loss throughout); ``akt: False`` keeps the curriculum but uses
the rank loss throughout.
"""

import logging
import math

import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

from recbole_hetcomp.distill import kd
from recbole_hetcomp.distill.curriculum import Curriculum
from recbole_hetcomp.distill.ensemble import importance_from_config, teacher_weight_vector
from recbole_hetcomp.trainer.base import CheckpointMixin

logger = logging.getLogger("recbole_hetcomp")


class UserBatches:
    """Every user that has training items once, in a new random order each epoch (torch's global generator, which
    RecBole's seed initialises), ``size`` users a batch: what ``hetcomp_batch: users`` trains on instead of
    RecBole's batches of interactions. The loss reads only the users of a batch (its targets are per user)."""

    shuffle = False  # what RecBole's _train_epoch asks (True makes it reseed a sampler, in distributed training)

    def __init__(self, users, size, uid_field):
        self.users, self.size, self.uid_field = users, int(size), uid_field

    def __len__(self):
        return math.ceil(self.users.numel() / self.size)

    def __iter__(self):
        order = self.users[torch.randperm(self.users.numel())]
        for a in range(0, order.numel(), self.size):
            yield Interaction({self.uid_field: order[a:a + self.size]})


class HetCompTrainer(CheckpointMixin, Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        if not model.trajectories:
            raise ValueError("HetCompTrainer needs a HetComp model built with the teachers' trajectories")
        names = [t.teacher for t in model.trajectories]
        self.akt = bool(config["akt"])
        self.kd_method = config["kd_method"] or "hetcomp"
        baseline = self.kd_method != "hetcomp"  # a KD baseline learns the final ensemble: no curriculum
        self.curriculum = Curriculum(
            model.trajectories, model.n_items, k_target=config["hetcomp_k"], p_obs=config["hetcomp_p"],
            weights=teacher_weight_vector(names, config["teacher_weights"]), imp=importance_from_config(config),
            alpha=config["dkc_alpha"], period=config["dkc_period"], start=config["dkc_start"],
            k=config["dkc_k"], enabled=bool(config["dkc"]) and not baseline, device=self.device)
        self.rd_warmup = config["rd_warmup"]
        self.cldrd_stage_epochs = config["cldrd_stage_epochs"]
        self.dcd_eps, self.dcd_refresh = config["dcd_eps"], config["dcd_refresh"]
        self.loss_switch_epoch = None
        self.dkc_done_epoch = None
        self.epoch_losses = {}
        self.user_batches = None
        if config["hetcomp_batch"] == "users":
            counts = model.history_indptr[1:] - model.history_indptr[:-1]
            self.user_batches = UserBatches(torch.nonzero(counts).view(-1).cpu(), config["hetcomp_batch_size"],
                                            model.USER_ID)
        self._apply_targets(0)
        model.kd_stage = self._baseline_stage(0)

    def _apply_targets(self, epoch):
        done = self.curriculum.done
        mode = "rank" if (done or not self.akt) else "overall"
        self.model.set_targets(self.curriculum.targets(), self.curriculum.observed, mode)
        if done and self.dkc_done_epoch is None:
            self.dkc_done_epoch = epoch
        if mode == "rank" and self.loss_switch_epoch is None:
            self.loss_switch_epoch = epoch
            if self.kd_method == "hetcomp":
                logger.info(f"HetComp: epoch {epoch}: using the rank loss from now on")

    def _baseline_stage(self, epoch):
        """What a KD baseline's loss changes with the epoch: RD's rank-discrepancy weights after ``rd_warmup``
        epochs of position weights alone, CL-DRD's stage (a finer one every ``cldrd_stage_epochs``)."""
        if self.kd_method == "rd":
            return {"dynamic": epoch >= self.rd_warmup}
        if self.kd_method == "cldrd":
            return {"stage": min(epoch // self.cldrd_stage_epochs, kd.CLDRD_STAGES - 1)}
        if self.kd_method == "cldrd_group":
            stage = min(epoch // self.cldrd_stage_epochs, kd.CLDRD_GROUP_STAGES - 1)
            return {"groups": kd.cldrd_group_ends(stage, self.model.target.shape[1])}
        return {}

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.kd_stage = self._baseline_stage(epoch_idx)
        if self.kd_method == "dcd" and (epoch_idx % self.dcd_refresh == 0 or not self.model.dcd):
            self.model.refresh_dcd(self.dcd_eps)  # DCD's discrepancies, every dcd_refresh epochs (its authors': 3)
        if self.curriculum.due(epoch_idx):
            advanced = self.curriculum.step(self.model.top_unobserved(self.curriculum.k), epoch_idx)
            shares = self.curriculum.shares()
            text = "; ".join(f"{n} {[round(s, 2) for s in row]}"
                             for n, row in zip(self.curriculum.names, shares.tolist()))
            logger.info(f"HetComp: epoch {epoch_idx}: DKC moved {advanced} pairs; share of users per point: {text}")
            self._apply_targets(epoch_idx)
        steps = train_data if self.user_batches is None else self.user_batches
        return super()._train_epoch(steps, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def curriculum_summary(self):
        """What a run's results keep of its curriculum."""
        return {"teachers": self.curriculum.names, "steps": self.curriculum.history,
                "dkc_done_epoch": self.dkc_done_epoch, "loss_switch_epoch": self.loss_switch_epoch}
