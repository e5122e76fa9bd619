"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv:2406.04093):
the module, its training loop over a fixed sample of activation vectors, and the quality measures.

    z = ReLU(TopK(W_enc (x - b_pre) + b_enc)),    x_hat = W_dec z + b_pre

with unit-norm decoder rows (renormalised after every step, the gradient's part along each row projected
out first), the encoder initialised as the decoder's transpose, b_pre at the data's coordinate median, Adam,
and the paper's AuxK loss, which lets latents that stopped firing reconstruct what the live ones leave out.
Inputs are divided by one scalar (their RMS about b_pre) while training, so that learning rates and biases
do not depend on the layer's scale; the returned module is folded back to the layer's own units.

Pure functions and a small module: no I/O, no device of its own; deterministic on a CPU for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Gao et al. 2024, section 2.3 and appendix A: Adam with eps 6.25e-10; the AuxK term weighs 1/32; a latent
# counts as dead after it fired on none of the last many inputs (10M tokens there; here DEAD_AFTER steps).
ADAM_EPS = 6.25e-10
AUX_WEIGHT = 1 / 32
DEAD_AFTER = 64  # steps without firing: far beyond chance at our batch sizes (a live latent fires ~k*B/F times)
# The paper's rule (2e-4 at 2^14 latents, times 1/sqrt(latents / 2^14)) is for runs of billions of tokens; ours
# are a few epochs over 10^5 vectors. Measured on the bundled model's 8x dictionary of blocks.5, 5 epochs: the
# rule's 6.5e-4 (batch 1024) gives explained variance 0.75 and 0.1% of features stable across seeds; 5e-3
# gives 0.81 and 6% at batch 1024, 0.80 and 10% at batch 512; 1e-2 (batch 1024) leaves 7% of the latents dead.
LEARNING_RATE = 5e-3
BATCH = 512


def topk_relu(pre: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """The k largest of `pre` along `dim`, ReLU'd; the others zero. The choice is made on a detached copy, so
    the gradient is that of the kept entries (as torch.topk's), and a linearised pass sees a fixed mask."""
    index = pre.detach().topk(k, dim=dim).indices
    mask = torch.zeros_like(pre).scatter_(dim, index, 1.0)
    return torch.relu(pre) * mask


class TopKSAE(nn.Module):
    """Encoder (features, channels), decoder rows (features, channels), biases; `encode` works on (..., C)."""

    def __init__(self, channels: int, features: int, k: int, generator: torch.Generator | None = None):
        super().__init__()
        if not 1 <= k <= features:
            raise ValueError(f"k must be between 1 and the number of features ({features}), got {k}")
        self.k = k
        decoder = torch.randn(features, channels, generator=generator)
        decoder /= decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.decoder = nn.Parameter(decoder)
        self.encoder = nn.Parameter(decoder.clone())  # the transpose of the decoder (as rows), as the paper does
        self.b_enc = nn.Parameter(torch.zeros(features))
        self.b_pre = nn.Parameter(torch.zeros(channels))

    @property
    def features(self) -> int:
        return self.decoder.shape[0]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_pre) @ self.encoder.T + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return topk_relu(self.pre(x), self.k)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.decoder + self.b_pre

    def directions(self) -> torch.Tensor:
        """The decoder rows at unit norm: each feature's direction in the layer's channel space."""
        d = self.decoder.detach()
        return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Training:
    steps: int
    batch: int = BATCH
    lr: float = LEARNING_RATE
    aux_k: int | None = None  # None: half the channels (the paper's k_aux of about d_model / 2)


def train(data: torch.Tensor, features: int, k: int, training: Training, seed: int,
          progress=None) -> tuple[TopKSAE, dict]:
    """A TopK SAE of `features` latents trained on the rows of `data` (N, C), float32 on the CPU or a GPU.
    Minibatches are drawn without replacement within each epoch by a generator seeded with `seed`; the same
    data and seed give the same weights. `progress(step)` is called every 50 steps. Returns the module (in
    the data's own units) and a summary of training (final normalised MSE, steps, learning rate)."""
    n, channels = data.shape
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(channels, features, k, gen).to(data.device)
    with torch.no_grad():
        centre = data[torch.randperm(n, generator=gen)[:65536].to(data.device)].median(dim=0).values
        scale = float((data - centre).pow(2).mean().sqrt().clamp_min(1e-12))
        sae.b_pre.copy_(centre / scale)
    aux_k = min(features, training.aux_k or max(1, channels // 2))
    opt = torch.optim.Adam(sae.parameters(), lr=training.lr, eps=ADAM_EPS)
    idle = torch.zeros(features, dtype=torch.long, device=data.device)  # steps since each latent last fired
    batch = min(training.batch, n)
    order, at = torch.randperm(n, generator=gen), 0
    loss_value = float("nan")
    for step in range(training.steps):
        if at + batch > n:
            order, at = torch.randperm(n, generator=gen), 0
        x = data[order[at:at + batch].to(data.device)] / scale
        at += batch
        loss, fired, nmse = _loss(sae, x, idle >= DEAD_AFTER, aux_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # no step along the rows' own direction: renormalising would undo it anyway
            g = sae.decoder.grad
            g -= (g * sae.decoder).sum(dim=1, keepdim=True) * sae.decoder
        opt.step()
        with torch.no_grad():
            sae.decoder /= sae.decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
            idle += 1
            idle[fired] = 0
        loss_value = nmse
        if progress and step % 50 == 0:
            progress(step)
    return _in_data_units(sae, scale), {"steps": training.steps, "lr": training.lr, "batch": batch, "scale": scale,
                                        "train_nmse": loss_value}


def _loss(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor, aux_k: int):
    """Normalised MSE plus AuxK. Only the k chosen latents (and the aux latents) enter the graph: the choice is
    made on one pass without gradient, then their pre-activations are recomputed from the gathered encoder
    rows, which gives the gradient of the dense formulation at a fraction of its cost."""
    with torch.no_grad():
        pre_all = sae.pre(x)
        index = pre_all.topk(sae.k, dim=1).indices  # (B, k)
    centred = x - sae.b_pre
    values = torch.relu(torch.einsum("bc,bkc->bk", centred, sae.encoder[index]) + sae.b_enc[index])
    recon = torch.einsum("bk,bkc->bc", values, sae.decoder[index]) + sae.b_pre
    error = x - recon
    variance = (x - x.mean(dim=0)).pow(2).sum(dim=1).mean().clamp_min(1e-12)
    nmse = error.pow(2).sum(dim=1).mean() / variance
    loss = nmse
    n_dead = int(dead.sum())
    if n_dead:
        kk = min(aux_k, n_dead)
        with torch.no_grad():
            aux_index = pre_all.masked_fill(~dead, -math.inf).topk(kk, dim=1).indices
        aux_values = torch.relu(torch.einsum("bc,bkc->bk", centred, sae.encoder[aux_index]) + sae.b_enc[aux_index])
        aux_recon = torch.einsum("bk,bkc->bc", aux_values, sae.decoder[aux_index])
        residual = error.detach()
        aux = (residual - aux_recon).pow(2).sum(dim=1).mean() / residual.pow(2).sum(dim=1).mean().clamp_min(1e-12)
        loss = loss + AUX_WEIGHT * torch.nan_to_num(aux, nan=0.0)
    fired = index[values.detach() > 0].unique()
    return loss, fired, float(nmse.detach())


def _in_data_units(sae: TopKSAE, scale: float) -> TopKSAE:
    """The same function on unscaled inputs: W_enc (x/s - b) = (W_enc / s)(x - s b); x_hat = s (W_dec z + b)."""
    out = TopKSAE(sae.decoder.shape[1], sae.features, sae.k).to(sae.decoder.device)
    with torch.no_grad():
        out.encoder.copy_(sae.encoder / scale)
        out.b_enc.copy_(sae.b_enc)
        out.b_pre.copy_(sae.b_pre * scale)
        out.decoder.copy_(sae.decoder * scale)
    return out.requires_grad_(False)


def quality(sae: TopKSAE, data: torch.Tensor, chunk: int = 8192) -> dict:
    """On held-out rows: explained variance (1 - residual / total variance), mean L0 (active latents per row),
    and each latent's firing frequency (share of rows where it is active)."""
    n = data.shape[0]
    mean = data.mean(dim=0)
    residual = total = active = 0.0
    fires = torch.zeros(sae.features, device=data.device)
    with torch.no_grad():
        for start in range(0, n, chunk):
            x = data[start:start + chunk]
            z = sae.encode(x)
            residual += float((x - sae.decode(z)).pow(2).sum())
            total += float((x - mean).pow(2).sum())
            on = z > 0
            active += float(on.sum())
            fires += on.sum(dim=0)
    return {"explained_variance": 1.0 - residual / max(total, 1e-12), "mean_l0": active / max(n, 1),
            "frequency": (fires / max(n, 1)).cpu()}


def best_cosines(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `a`, the largest cosine with any row of `b` (signed: a feature and its negative are
    different features of a ReLU dictionary) and the index of that row."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (a @ b.T).max(dim=1)
    return best.values, best.indices


def channel_match(directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit direction's best |cosine| with a single channel (its largest |component|), and that channel."""
    best = directions.abs().max(dim=1)
    return best.values, best.indices
