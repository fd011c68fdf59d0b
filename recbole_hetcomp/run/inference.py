"""Using trained models: full-ranking timing, reloading a saved model, top-K export to CSV."""

import csv
import io
import os
import shutil
import time
from pathlib import Path

import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_hetcomp.registry import get_model
from recbole_hetcomp.run.results import atomic_write_text
from recbole_hetcomp.trainer.base import full_sort_scorer, load_checkpoint


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def full_ranking_ms_per_1k_users(trainer, dataset, batch_users=256):
    """Wall milliseconds per 1,000 users to score every item for every real user."""
    trainer.model.eval()
    score = full_sort_scorer(trainer, dataset)
    users = torch.arange(1, dataset.user_num, device=trainer.device)
    score(users[:batch_users])  # warm-up (LightGCN caches its propagation here, as in evaluation)
    _sync(trainer.device)
    start = time.perf_counter()
    for a in range(0, users.numel(), batch_users):
        score(users[a:a + batch_users])
    _sync(trainer.device)
    return (time.perf_counter() - start) * 1e6 / max(users.numel(), 1)


def save_model(trainer, path):
    """Copy ``trainer``'s best checkpoint to ``path`` (temporary file, then rename)."""
    tmp = f"{path}.tmp"
    try:
        shutil.copyfile(trainer.saved_model_file, tmp)
        shutil.move(tmp, path)
    except BaseException:  # an error or Ctrl-C: no half-copied file left beside the model
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


FIX = "give a model file this package wrote (results/<dataset>/<Model>.pth)"


def read_model_file(model_file):
    """The checkpoint dict of a model file this package wrote; ``ValueError`` with one line naming the file
    when it is missing, damaged, truncated or foreign."""
    path = Path(model_file)
    if not path.is_file():
        raise ValueError(f"no saved model at {path}: train one first (its path is in results.json)")
    try:
        checkpoint = load_checkpoint(path, "cpu")
    except Exception as e:  # unpickling, zip and I/O errors all mean: not a readable checkpoint
        reason = " ".join(str(e).split())[:80] or type(e).__name__
        raise ValueError(f"{path} cannot be read as a model file ({type(e).__name__}: {reason}): it is damaged, "
                         f"truncated or not a checkpoint; {FIX}") from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        held = f"keys {', '.join(map(str, list(checkpoint)[:5]))}" if isinstance(checkpoint, dict) else \
            f"a {type(checkpoint).__name__}"
        raise ValueError(f"{path} is not a recbole-hetcomp model file (it holds {held}, no config and "
                         f"state_dict); {FIX}")
    return checkpoint


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` for plugin models: returns
    (config, model, dataset, train_data, valid_data, test_data).

    The checkpoint is one this package wrote (it pickles its Config), so it is loaded with
    ``weights_only=False``. A HetComp student comes back ready to predict, without its teachers.
    A missing, damaged or foreign file, or one of a model this version does not know, is a
    ``ValueError`` naming the file.
    """
    checkpoint = read_model_file(model_file)
    config = checkpoint["config"]
    try:
        model_class = get_model(config["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{model_file} holds a model this version does not know ({e}); {FIX}") from None
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{model_file}: its weights do not fit a {config['model']} model of this version "
                         f"({first}); {FIX}") from None
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset, train, valid, test


@torch.no_grad()
def recommend_topk(model, dataset, k, users=None, batch_users=256):
    """Top-``k`` items per user, excluding every item the user interacted with in ``dataset``.

    ``users``: external user tokens (default: every user). Returns a list of
    (user token, [(item token, score), ...]) in the order given.
    """
    uid, iid = dataset.uid_field, dataset.iid_field
    if users is None:
        ids = torch.arange(1, dataset.user_num)
    else:
        tokens = [str(u) for u in users]
        unknown = [t for t in tokens if t not in dataset.field2token_id[uid]]
        if unknown:
            raise ValueError(f"unknown user id(s) {', '.join(unknown[:5])}: they are not in dataset "
                             f"{dataset.dataset_name}")
        ids = torch.as_tensor(dataset.token2id(uid, tokens)).view(-1)
    if not 1 <= k <= dataset.item_num - 1:
        raise ValueError(f"k={k} must be between 1 and the number of items ({dataset.item_num - 1})")
    known = dataset.inter_matrix(form="csr")
    device = next(model.parameters()).device
    model.eval()
    out = []
    for a in range(0, ids.numel(), batch_users):
        batch = ids[a:a + batch_users]
        scores = model.full_sort_predict(Interaction({uid: batch.to(device)})).view(batch.numel(), -1).cpu()
        scores[:, 0] = float("-inf")
        for row, u in enumerate(batch.tolist()):
            scores[row, known.indices[known.indptr[u]:known.indptr[u + 1]]] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        items = dataset.id2token(iid, top.indices.numpy())
        for row, u in enumerate(batch.tolist()):
            out.append((dataset.id2token(uid, u), list(zip(items[row].tolist(), top.values[row].tolist()))))
    return out


def export_topk_csv(path, model, dataset, k, users=None):
    """Write ``user_id,rank,item_id,score`` rows (rank from 1) to ``path``, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["user_id", "rank", "item_id", "score"])
    for user, recs in recommend_topk(model, dataset, k, users):
        for rank, (item, score) in enumerate(recs, 1):
            writer.writerow([user, rank, item, f"{score:.6g}"])
    atomic_write_text(path, buf.getvalue())
    return path
