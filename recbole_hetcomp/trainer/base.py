"""Behaviour every trainer of ours adds to RecBole's: loading our own checkpoints under torch >= 2.6."""

import torch
from recbole.data.interaction import Interaction

from recbole_hetcomp.settings import positive_int


def load_checkpoint(path, device):
    """Load a checkpoint this package wrote. RecBole pickles its Config into checkpoints, which
    torch >= 2.6 refuses by default; these files are our own run's output, so unpickling is safe."""
    return torch.load(path, map_location=device, weights_only=False)


def full_sort_scorer(trainer, dataset):
    """``users -> scores [B, I]`` (column 0 at -inf, nothing else masked) through RecBole's own
    full-ranking path, ``_full_sort_batch_eval``, which falls back to ``predict`` for models
    without ``full_sort_predict`` (e.g. NeuMF)."""
    if trainer.item_tensor is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    trainer.tot_item_num = dataset.item_num
    uid = dataset.uid_field

    def score(users):
        return trainer._full_sort_batch_eval((Interaction({uid: users}), None, None, None))[1]

    return score


def pair_batch_bound(config):
    """``predict_batch_size``, checked: the most (user, item) pairs scored at once, None for no bound."""
    return None if config["predict_batch_size"] is None else positive_int(config, "predict_batch_size")


def bound_pair_batches(trainer, config):
    """Cap the (user, item) pairs that a model without ``full_sort_predict`` (NeuMF) scores at once
    in full ranking at ``predict_batch_size``. RecBole splits them by ``eval_batch_size``, which
    also sets the users of a batch, so a large one (CiteULike-t's 187 users of 22,383 items) would
    send 4 million pairs through NeuMF's MLP at once. Models with ``full_sort_predict`` are
    unaffected. Returns ``trainer``."""
    bound = pair_batch_bound(config)
    if bound is not None:
        trainer.test_batch_size = min(trainer.test_batch_size, bound)
    return trainer


class CheckpointMixin:
    """Overrides ``evaluate`` only to load the best checkpoint with ``weights_only=False``, and
    ``_valid_epoch`` only to keep its full result (``last_valid_result``) for progress reports;
    its constructor bounds pair scoring (:func:`bound_pair_batches`) and makes every model validate
    at least once."""

    last_valid_result = None

    def __init__(self, config, model):
        super().__init__(config, model)
        bound_pair_batches(self, config)
        # RecBole validates at least once, after the last epoch (eval_step = min(eval_step, epochs)), but its
        # TraditionalTrainer (EASE, Pop, ItemKNN) sets epochs to 1 after that: with eval_step > 1 such a model
        # was never validated, kept no checkpoint and failed when tested. The same rule, applied again:
        self.eval_step = min(self.eval_step, self.epochs)

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.last_valid_result = dict(result)
        return score, result

    def load_best_checkpoint(self, model_file=None):
        checkpoint = load_checkpoint(model_file or self.saved_model_file, self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            self.load_best_checkpoint(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
