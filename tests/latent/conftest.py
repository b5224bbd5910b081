"""A toy transformer-ish stack with a denoise loop, a tuple-returning module and declared sites."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.latent import Site, annotate


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(-1)


class Toy(nn.Module):
    """Two flow-matching-like 'denoise steps' per forward, each annotated like the real sampler."""

    def __init__(self, d: int = 8, n_blocks: int = 3, n_denoise: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.pair = Pair()
        self.head = nn.Linear(d, 4)
        self.register_buffer("scale", torch.tensor(0.5))
        self.n_denoise = n_denoise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.n_denoise):
            with annotate(denoise_step=k):
                h = self.embed(x)
                for i, blk in enumerate(self.blocks):
                    h = blk(h)
                    if i == 1:
                        h.add_(0.25)  # in-place edit after the site: a Tap must have cloned
                a, s = self.pair(h)
                x = x + self.scale * self.head(a) + s.unsqueeze(-1) * 1e-3
        return x

    def latent_sites(self) -> dict[str, Site]:
        return {
            "block0": Site("blocks.0", description="first residual block output"),
            "block1": Site("blocks.1"),
            "pair_first": Site("pair", index=0),
            "pair_sum": Site("pair", index=1),
            "head_in": Site("head", kind="input"),
        }


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
