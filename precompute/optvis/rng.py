"""Seeded randomness for a batch: either one generator for the whole batch or one per batch element.

One generator per element, seeded from (seed, key), makes an element's picture independent of the batch it
happens to be rendered in (chunk size, or a batch halved after running out of memory), so a unit's render is
a function of (model, unit, settings, seed) alone. Draws are made on the CPU and moved afterwards, so the
same seed gives the same starting image and the same transforms on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Generators = torch.Generator | Sequence[torch.Generator]


def element_generators(seed: int, keys: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per key; SeedSequence mixes (seed, key) so nearby seeds and keys give unrelated streams."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seeds and element keys must be non-negative integers, got seed={seed}")
    states = [np.random.SeedSequence([int(seed), int(k)]).generate_state(2, np.uint32) for k in keys]
    return [torch.Generator().manual_seed(int(s[0]) << 31 | int(s[1]) >> 1) for s in states]


def _per_element(gen: Generators, batch: int) -> list[torch.Generator] | None:
    if isinstance(gen, torch.Generator):
        return None
    gens = list(gen)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}")
    return gens


def normal(gen: Generators, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal draws of shape (batch, *shape) on the CPU."""
    gens = _per_element(gen, batch)
    if gens is None:
        return torch.randn((batch, *shape), generator=gen)
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def choice(gen: Generators, batch: int, options: Sequence[float]) -> torch.Tensor:
    """One option per element, uniformly (as Lucid's `np.random.choice`), as a float tensor (batch,)."""
    table = torch.as_tensor(list(options), dtype=torch.float64)
    gens = _per_element(gen, batch)
    if gens is None:
        index = torch.randint(len(table), (batch,), generator=gen)
    else:
        index = torch.cat([torch.randint(len(table), (1,), generator=g) for g in gens])
    return table[index]
