"""``HetComp``: the small MF student distilled from the teachers' trajectories (spec sections 6-7).

The student is plain matrix factorisation (user and item embeddings, dot-product scores,
N(0, init_std) initialisation), so it ranks like any RecBole model through
``full_sort_predict``. What makes it HetComp is its training signal: ``calculate_loss``
takes the unique users of the batch and applies the overall (set-level) loss or the rank
(list-level) loss against the current ensemble target T(u) and Pobs(u), on scores clamped to
``score_clamp``, computed in a [B, I] buffer the model keeps between batches. The targets and the
loss mode are set by :class:`~recbole_hetcomp.trainer.hetcomp.HetCompTrainer`, which runs
the curriculum. Built without trajectories the model only predicts (e.g. reloaded for use).

With ``student`` other than ``MF`` the student is that RecBole model (``self.net``), trained by the same losses on
its full-catalogue scores. With ``kd_method`` other than ``hetcomp`` the same student learns the final ensemble through a
ranking-KD baseline instead (RD, RRD, DCD, CL-DRD, and our earlier readings of the last two:
:mod:`recbole_hetcomp.distill.kd`), without curriculum, on autograd [B, I] scores.
"""

import torch
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import AbstractRecommender, GeneralRecommender
from recbole.utils import InputType, ModelType
from recbole.utils import get_model as recbole_model
from torch import nn

from recbole_hetcomp.distill import kd
from recbole_hetcomp.distill.ensemble import csr_entries, csr_row_mask
from recbole_hetcomp.distill.losses import TrainEntries, clamp_scores, factorised_loss, overall_loss, rank_loss
from recbole_hetcomp.model.general import GENERAL, by_name

#: ``kd_method``: HetComp's own losses, or a ranking-KD baseline on the final ensemble (:mod:`recbole_hetcomp.distill.kd`).
KD_METHODS = ("hetcomp", "rd", "rrd", "dcd", "cldrd", "dcd_overview", "cldrd_group")
#: The baselines whose student also trains on its own loss (BPR here) beside the distillation term: RD, RRD and DCD
#: as in their papers, CL-DRD because our student starts from scratch (``cldrd_base``; docs/kd.md).
WITH_BASE_LOSS = ("rd", "rrd", "dcd", "dcd_overview", "cldrd")


def student_class(name):
    """The class of a student architecture other than MF: one of our general models (:data:`GENERAL`) or a RecBole
    general model; ``ValueError`` naming the reason for anything else."""
    ours = by_name(GENERAL, name)
    if ours is not None:
        return ours
    try:
        cls = recbole_model(name)
    except (ValueError, ImportError, AttributeError):
        raise ValueError(f"student={name}: not a RecBole model; use MF (the default) or a general model with a "
                         "differentiable full-catalogue score, e.g. LightGCN") from None
    kind = getattr(cls, "type", None)
    if kind == ModelType.TRADITIONAL:
        raise ValueError(f"student={name}: it is fitted in one shot, not by gradient, so it cannot learn from "
                         "HetComp's losses; use MF, LightGCN, or another model trained by gradient")
    if kind != ModelType.GENERAL:
        raise ValueError(f"student={name}: a {getattr(kind, 'name', kind)!s} model; the student must be a general "
                         "recommender (users x items): use MF, LightGCN, or another general model")
    if cls.full_sort_predict is AbstractRecommender.full_sort_predict:
        raise ValueError(f"student={name}: it cannot score the whole catalogue at once (no full_sort_predict), "
                         "which HetComp's losses need; use MF, LightGCN, or another model that has one")
    return cls


class HetComp(GeneralRecommender):
    input_type = InputType.POINTWISE
    other_parameter_name = ("dcd",)  # RecBole saves these in checkpoints: a resumed DCD run keeps its weights

    def __init__(self, config, dataset, trajectories=None):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.student = config["student"] or "MF"  # a model file saved before the key existed: the MF student
        self.net = None  # the student's network when it is not MF
        if self.student == "MF":
            self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
            self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
            nn.init.normal_(self.user_embedding.weight, std=config["init_std"])
            nn.init.normal_(self.item_embedding.weight, std=config["init_std"])
        else:
            self.net = student_class(self.student)(config, dataset).to(self.device)  # RecBole models put some
            self._check_differentiable()  # buffers (LightGCN's adjacency) on the device at once
        self.clamp = float(config["score_clamp"])
        self.loss_weights = {"overall": float(config["overall_loss_weight"]),
                             "rank": float(config["rank_loss_weight"])}
        self.trajectories = trajectories
        self.kd_method = config["kd_method"] or "hetcomp"  # likewise
        if self.kd_method not in KD_METHODS:
            raise ValueError(f"kd_method={self.kd_method}: must be one of {', '.join(KD_METHODS)}")
        self.kd_weight = float(config["kd_weight"]) if self.kd_method != "hetcomp" else 1.0
        self.kd_options = ({"lam": float(config["rd_lambda"]), "mu": float(config["rd_mu"])}
                           if self.kd_method == "rd" else {})  # dcd_overview: every mis-ranked candidate, no sampling
        self.dcd_draws = int(config["dcd_sample"] or 10)  # a model file saved before these keys existed: defaults
        self.cldrd_candidates = int(config["cldrd_candidates"] or 30)
        self.dcd_rrd = config["dcd_rrd"] is not False
        self.cldrd_base = config["cldrd_base"] is not False
        self.kd_stage = {}  # what the trainer sets per epoch: RD's ``dynamic``, CL-DRD's ``stage`` (cldrd_group: ``groups``)
        csr = dataset.inter_matrix(form="csr")  # training interactions, one row per user
        self.register_buffer("history_indptr", torch.from_numpy(csr.indptr).long(), persistent=False)
        self.register_buffer("history_items", torch.from_numpy(csr.indices).long(), persistent=False)
        self.register_buffer("target", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("observed", torch.empty(0, dtype=torch.long), persistent=False)
        self.dcd = {}  # DCD's discrepancy weights and item lists, set by refresh_dcd (every dcd_refresh epochs)
        self.loss_mode = "overall"
        self._scores_workspace = None  # see _workspace (a plain tensor: not in the state dict)

    def set_targets(self, target, observed, loss_mode):
        """Set T(u) (long [U, K]), Pobs(u) (long [U, P]) and the loss ('overall' or 'rank')."""
        if loss_mode not in self.loss_weights:
            raise ValueError(f"loss_mode must be 'overall' or 'rank', got {loss_mode!r}")
        self.target = target.to(self.history_items.device)
        self.observed = observed.to(self.history_items.device)
        self.loss_mode = loss_mode

    def train_mask(self, users):
        """bool [B, I]: the users' training items, plus RecBole's padding item 0.

        Built from the training matrix's CSR rows, so the work is the batch's interactions,
        not B times the longest history.
        """
        return csr_row_mask(self.history_indptr, self.history_items, users, self.n_items)

    def train_entries(self, users):
        """:meth:`train_mask` as :class:`~recbole_hetcomp.distill.losses.TrainEntries` (for the MF student's
        factorised loss, which then zeroes its tail at the entries instead of masking [B, I] scores)."""
        rows, items = csr_entries(self.history_indptr, self.history_items, users)
        return TrainEntries(rows, items, (users.numel(), self.n_items))

    def _check_differentiable(self):
        with torch.enable_grad():
            scores = self.forward(torch.ones(1, dtype=torch.long, device=self.device))
        self._fresh()
        if not scores.requires_grad:
            raise ValueError(f"student={self.student}: its full-catalogue scores carry no gradient (a model fitted in "
                             "one shot or from counts, such as EASE, ItemKNN or Pop, cannot learn from HetComp's "
                             "losses); use MF, LightGCN, or another model trained by gradient")

    def _fresh(self):
        """Forget what a RecBole student cached in its ``full_sort_predict`` (LightGCN's and NGCF's full-catalogue
        embeddings, DMF's item tower: its ``other_parameter_name``), which it clears in its own ``calculate_loss``,
        never called here."""
        for name in getattr(self.net, "other_parameter_name", ()):
            if getattr(self.net, name, None) is not None:
                setattr(self.net, name, None)

    def train(self, mode=True):
        if self.net is not None:
            self._fresh()  # a cache filled before this switch belongs to other weights
        return super().train(mode)

    def forward(self, users):
        """The users' scores of every item, [B, I] (with gradient when training)."""
        if self.net is None:
            return self.user_embedding(users) @ self.item_embedding.weight.t()
        if self.training:
            self._fresh()  # the weights changed since the last batch
        return self.net.full_sort_predict(Interaction({self.USER_ID: users})).view(users.numel(), self.n_items)

    def calculate_loss(self, interaction):
        if self.target.numel() == 0:
            raise RuntimeError("HetComp has no ensemble target: train it with HetCompTrainer and the "
                               "teachers' trajectories")
        users = torch.unique(interaction[self.USER_ID])
        if self.kd_method != "hetcomp":
            return self._baseline_loss(interaction, users)
        if self.net is not None:  # a general student: the losses on its autograd [B, I] scores
            fn = overall_loss if self.loss_mode == "overall" else rank_loss
            loss = fn(clamp_scores(self.forward(users), self.clamp), self.observed[users], self.target[users],
                      self.train_mask(users))
            return self.loss_weights[self.loss_mode] * loss
        loss = factorised_loss(self.loss_mode, self.user_embedding(users), self.item_embedding.weight,
                               self.observed[users], self.target[users], self.train_entries(users),
                               clamp=self.clamp, workspace=self._workspace(users.numel()))
        return self.loss_weights[self.loss_mode] * loss

    def _baseline_loss(self, interaction, users):
        """A ranking-KD baseline: ``kd_weight`` times its distillation term on the batch's users against the final
        ensemble's T(u), plus (RD, RRD, DCD, as in their papers) the student's own BPR loss on the batch's
        interactions, one uniform negative each. Both terms are sums (over users, over interactions)."""
        mask = self.train_mask(users)
        scores = clamp_scores(self.forward(users), self.clamp)
        top = self.target[users]
        options = {**self.kd_options, **self.kd_stage}
        if self.kd_method == "rd":
            loss = kd.rd_loss(scores, top, mask, **options)
        elif self.kd_method == "rrd":
            loss = kd.rrd_loss(scores, top, mask)
        elif self.kd_method == "dcd":
            loss = self._dcd_loss(interaction, users, scores, top)
            if self.dcd_rrd:
                loss = loss + kd.rrd_loss(scores, top, mask)
        elif self.kd_method == "cldrd":
            cand = top[:, :self.cldrd_candidates]
            labels = kd.cldrd_labels(options.get("stage", 0), cand.shape[1])
            loss = kd.cldrd_loss(scores.gather(1, cand.clamp(min=0)), labels, cand >= 0)
        elif self.kd_method == "dcd_overview":
            loss = kd.rrd_loss(scores, top, mask) + kd.dcd_overview_loss(scores, top, mask, **options)
        else:
            loss = kd.cldrd_group_loss(scores, top, mask, options.get("groups") or kd.cldrd_group_ends(0, top.shape[1]))
        loss = self.kd_weight * loss
        if self.kd_method in WITH_BASE_LOSS and (self.kd_method != "cldrd" or self.cldrd_base):
            loss = loss + self._bpr_loss(interaction, users, mask, scores)
        return loss

    def _dcd_loss(self, interaction, users, scores, top):
        """DCD's correction terms as its authors' code computes them: ``UCD + ICD``, each side
        :func:`~recbole_hetcomp.distill.kd.dcd_correction` on ``dcd_sample`` draws from the weights of the last
        :meth:`refresh_dcd`. User side: the batch's users' target lists. Item side: the batch's positive items
        (with ``hetcomp_batch: users``, the batch users' training items), each over its teacher's top users across
        all users (:func:`~recbole_hetcomp.distill.kd.dcd_item_lists`)."""
        if not self.dcd:
            raise RuntimeError("kd_method=dcd: no discrepancies yet; HetCompTrainer calls refresh_dcd every "
                               "dcd_refresh epochs")
        d, k = self.dcd, self.dcd_draws
        loss = kd.dcd_correction(scores.gather(1, top.clamp(min=0)), kd.dcd_sample(d["user_under"][users], k),
                                 kd.dcd_sample(d["user_over"][users], k))
        if self.ITEM_ID in interaction:
            items = torch.unique(interaction[self.ITEM_ID])
        else:
            items = torch.unique(csr_entries(self.history_indptr, self.history_items, users)[1])
        items = items[items > 0]
        if items.numel():
            lists = d["item_users"][items]
            item_scores = self.pair_scores(lists.clamp(min=0), items.unsqueeze(1).expand_as(lists))
            loss = loss + kd.dcd_correction(item_scores.clamp(-self.clamp, self.clamp),
                                            kd.dcd_sample(d["item_under"][items], k),
                                            kd.dcd_sample(d["item_over"][items], k), ranks=d["item_pos"][items])
        return loss

    def pair_scores(self, users, items):
        """The student's scores of the pairs ``(users[e], items[e])``, shaped like ``users`` (with gradient when
        training). MF: one dot product a pair; another student scores the pairs' distinct users over the whole
        catalogue and picks."""
        if self.net is None:
            return (self.user_embedding(users) * self.item_embedding(items)).sum(-1)
        distinct, row = torch.unique(users, return_inverse=True)
        return self.forward(distinct)[row, items]

    @torch.no_grad()
    def refresh_dcd(self, eps, chunk=4096):
        """Recompute DCD's discrepancy weights (:func:`~recbole_hetcomp.distill.kd.dcd_discrepancies`) from the
        student's current scores: every user's target list, and every item's teacher top users (as many as the
        target is long, built once from the final target)."""
        was_training = self.training
        self.eval()
        top = self.target
        if "item_users" not in self.dcd:
            self.dcd["item_users"], self.dcd["item_pos"] = kd.dcd_item_lists(top, self.n_items, top.shape[1])
        for side, lists in (("user", top), ("item", self.dcd["item_users"])):
            under = torch.zeros(lists.shape, device=top.device)
            over = torch.zeros_like(under)
            for a in range(0, lists.shape[0], chunk):
                part = lists[a:a + chunk]
                ids = torch.arange(a, a + part.shape[0], device=part.device).unsqueeze(1).expand_as(part)
                pairs = (ids, part.clamp(min=0)) if side == "user" else (part.clamp(min=0), ids)
                scores = self.pair_scores(*pairs).clamp(-self.clamp, self.clamp)
                ranks = None if side == "user" else self.dcd["item_pos"][a:a + chunk]  # an item's users may tie
                under[a:a + chunk], over[a:a + chunk] = kd.dcd_discrepancies(scores, part >= 0, eps, ranks)
            self.dcd[f"{side}_under"], self.dcd[f"{side}_over"] = under, over
        self.train(was_training)

    def _bpr_loss(self, interaction, users, mask, scores):
        """BPR over the batch's (user, item) interactions, on the users' (clamped) ``scores``, each against one item
        drawn uniformly, drawn again once where the first draw is a training item of that user (a second hit is
        kept: rare, and harmless). With ``hetcomp_batch: users`` (no items in the batch) the interactions are
        all of the batch users' training items, so an epoch covers every interaction once either way."""
        if self.ITEM_ID in interaction:
            u, pos = interaction[self.USER_ID], interaction[self.ITEM_ID]
            row = torch.searchsorted(users, u)  # users are unique and sorted (torch.unique)
        else:
            row, pos = csr_entries(self.history_indptr, self.history_items, users)
            u = users[row]
        neg = torch.randint(1, self.n_items, u.shape, device=u.device)
        again = torch.randint(1, self.n_items, u.shape, device=u.device)
        neg = torch.where(mask[row, neg], again, neg)
        return -torch.nn.functional.logsigmoid(scores[row, pos] - scores[row, neg]).sum()

    def _workspace(self, n_users):
        """A float buffer for the batch's [B, I] scores and, when clamped, their raw values (2 B I),
        kept from batch to batch (see :func:`~recbole_hetcomp.distill.losses.factorised_loss`); grown by
        a quarter when too small."""
        need = 2 * n_users * self.n_items
        weight = self.item_embedding.weight
        ws = self._scores_workspace
        if ws is None or ws.numel() < need or ws.device != weight.device or ws.dtype != weight.dtype:
            size = min(need + need // 4, 2 * self.n_users * self.n_items)
            ws = self._scores_workspace = torch.empty(size, dtype=weight.dtype, device=weight.device)
        return ws

    def predict(self, interaction):
        if self.net is not None:
            return self.net.predict(interaction)
        u = self.user_embedding(interaction[self.USER_ID])
        i = self.item_embedding(interaction[self.ITEM_ID])
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        return self.forward(interaction[self.USER_ID]).view(-1)

    @torch.no_grad()
    def top_unobserved(self, k, chunk_users=1024):
        """Every user's top-k items outside their training items: long [U, k]."""
        was_training = self.training
        self.eval()  # no dropout in the lists DKC compares (and a fresh cache for a RecBole student)
        out = torch.zeros(self.n_users, k, dtype=torch.long, device=self.history_items.device)
        for a in range(0, self.n_users, chunk_users):
            users = torch.arange(a, min(a + chunk_users, self.n_users), device=self.history_items.device)
            scores = self.forward(users).masked_fill(self.train_mask(users), float("-inf"))
            out[users] = torch.topk(scores, k, dim=1).indices
        self.train(was_training)
        return out
