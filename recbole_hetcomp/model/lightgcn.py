"""LightGCN (He et al., SIGIR 2020): RecBole's model, with a faster graph propagation.

RecBole's LightGCN multiplies its normalised adjacency, an uncoalesced COO sparse tensor, into the embeddings with
``torch.sparse.mm`` at every layer of every step. On the CPU that product is slow, and its backward pass is
slower: autograd transposes and coalesces the COO matrix again at each call. This subclass keeps everything of
RecBole's model (parameters, initialisation, losses, caches, checkpoints: a checkpoint of either loads into the
other) and changes one thing, the product: the same matrix held once in CSR, and the backward pass multiplying by
its transpose, also held once in CSR (the same object: LightGCN's ``D^-1/2 A D^-1/2`` of an undirected graph is
symmetric, bit for bit). The sums are the same, added in another order: results agree with RecBole's to float
rounding, not bit for bit. ``benchmarks/lightgcn_speed.py`` measures the two side by side.

:func:`recbole_hetcomp.registry.get_model` finds this class before RecBole's, so a teacher, a student
(``student: LightGCN``) and ``--model LightGCN`` all use it.
"""

import torch
from recbole.model.general_recommender.lightgcn import LightGCN as RecBoleLightGCN


class _SparseProduct(torch.autograd.Function):
    """``matrix @ dense`` for a fixed sparse CSR ``matrix``: the gradient reaches ``dense`` only, as
    ``transposed @ grad`` with the transpose built once by the caller."""

    @staticmethod
    def forward(ctx, matrix, transposed, dense):
        ctx.transposed = transposed
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transposed @ grad


def csr_pair(matrix):
    """``(A, A^T)`` of a sparse COO ``matrix`` as CSR tensors; ``A^T`` is ``A`` itself, one object, where the two
    are equal entry for entry."""
    a = matrix.coalesce().to_sparse_csr()  # torch warns that its CSR layout is beta (the command line hides it)
    t = matrix.t().coalesce().to_sparse_csr()
    same = (torch.equal(a.crow_indices(), t.crow_indices()) and torch.equal(a.col_indices(), t.col_indices())
            and torch.equal(a.values(), t.values()))
    return a, (a if same else t)


def propagate(matrix, transposed, dense):
    """``matrix @ dense`` with its gradient to ``dense`` (``matrix`` and ``transposed``: :func:`csr_pair`)."""
    return _SparseProduct.apply(matrix, transposed, dense)


class LightGCN(RecBoleLightGCN):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # RecBole's matrix replaced by its CSR form (one copy, not two); its transpose is the same object here
        self.norm_adj_matrix, self.norm_adj_matrix_t = csr_pair(self.norm_adj_matrix)

    def forward(self):
        embeddings = self.get_ego_embeddings()
        layers = [embeddings]
        for _ in range(self.n_layers):
            embeddings = propagate(self.norm_adj_matrix, self.norm_adj_matrix_t, embeddings)
            layers.append(embeddings)
        mean = torch.stack(layers, dim=1).mean(dim=1)
        return torch.split(mean, [self.n_users, self.n_items])
