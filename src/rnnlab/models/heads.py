"""Output heads beyond torch's: the adaptive softmax tied to the embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TiedAdaptiveSoftmax(nn.Module):
    """An adaptive softmax whose word vectors are the embedding's rows (weight tying, Press &
    Wolf 2017, for the factorisation of Grave et al. 2017).

    With E the (V, H) embedding, b a bias per word and, per tail cluster i, a vector u_i and a
    bias a_i (cutoffs c_1 < ... < c_n, c_{n+1} = V)::

        head:   s = softmax([E[:c_1] h + b[:c_1], u_1 h + a_1, ..., u_n h + a_n])   (c_1 + n,)
        p(w | h) = s[w]                                                  w < c_1
        p(w | h) = s[c_1 + i - 1] * softmax(E[c_i:c_{i+1}] h + b[c_i:c_{i+1}])[w - c_i]

    Every word is scored by its own embedding vector, so a rare word's output vector is trained
    by its inputs too, and the head adds only ``(H + 1) n + V`` parameters. The tail clusters
    are full width (no projection, so no ``div_value``): each tail token costs ``2 H |cluster|``
    multiply-adds, paid only for the positions whose target falls in that cluster.

    Shapes: ``h`` (N, H); ``targets`` (N,) ids in 0..V-1.
    """

    def __init__(self, embedding: nn.Embedding, cutoffs: tuple[int, ...]) -> None:
        super().__init__()
        v, h = embedding.weight.shape
        self.weight = embedding.weight  # (V, H), shared: the checkpoint stores it once
        self.bounds = (*cutoffs, v)
        self.register_buffer("cuts", torch.tensor(cutoffs), persistent=False)
        self.bias = nn.Parameter(torch.empty(v))  # (V,)
        self.cluster_weight = nn.Parameter(torch.empty(len(cutoffs), h))  # (n, H)
        self.cluster_bias = nn.Parameter(torch.empty(len(cutoffs)))  # (n,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Cluster vectors uniform ±0.1, biases zero (the word vectors are the embedding's)."""
        nn.init.uniform_(self.cluster_weight, -0.1, 0.1)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.cluster_bias)

    def _head(self, h: Tensor) -> Tensor:
        """Log-probabilities of the head's ``c_1`` words and ``n`` clusters (N, c_1 + n)."""
        c = self.bounds[0]
        w = torch.cat((self.weight[:c], self.cluster_weight))  # (c_1 + n, H)
        b = torch.cat((self.bias[:c], self.cluster_bias))  # (c_1 + n,)
        return torch.log_softmax(torch.addmm(b, h, w.t()), dim=-1)

    def _tail(self, h: Tensor, i: int) -> Tensor:
        """Log-probabilities within tail cluster i (from 0) (N, c_{i+2} - c_{i+1})."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return torch.log_softmax(torch.addmm(self.bias[lo:hi], h, self.weight[lo:hi].t()), -1)

    def log_prob(self, h: Tensor) -> Tensor:
        """Full log-probabilities (N, V)."""
        head = self._head(h)  # (N, c_1 + n)
        c = self.bounds[0]
        parts = [head[:, :c]]
        for i in range(len(self.bounds) - 1):
            parts.append(head[:, c + i : c + i + 1] + self._tail(h, i))
        return torch.cat(parts, dim=1)

    def forward(self, h: Tensor, targets: Tensor) -> Tensor:
        """``log p(targets | h)`` (N,), each tail cluster evaluated on its own positions only."""
        c = self.bounds[0]
        cluster = torch.bucketize(targets, self.cuts, right=True)  # (N,) 0 = head, i = tail i
        head_index = torch.where(cluster == 0, targets, c + cluster - 1)  # (N,)
        logp = self._head(h).gather(1, head_index[:, None]).squeeze(1)  # (N,)
        for i in range(len(self.bounds) - 1):
            rows = (cluster == i + 1).nonzero().squeeze(1)  # (N_i,)
            if rows.numel() == 0:
                continue
            within = (targets[rows] - self.bounds[i])[:, None]  # (N_i, 1)
            logp = logp.index_add(0, rows, self._tail(h[rows], i).gather(1, within).squeeze(1))
        return logp
