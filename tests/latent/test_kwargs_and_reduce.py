"""Keyword / optional input sites and Tap statistics (``reduce``): what QuantVLA calibration reads."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.latent import Intervention, Site, Tap, assert_model_unchanged, module_snapshot, site_name


class Attend(nn.Module):
    """``forward(q, k, v, mask=None)``: the mask may come positionally, by keyword, or not at all."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = q @ k.transpose(-1, -2)
        if mask is not None:
            logits = logits + mask
        return logits.softmax(-1) @ v


class Caller(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attend = Attend()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [self.attend(x, x, x, mask), self.attend(x, x, x, mask=mask * 2), self.attend(x, x, x)]


MASK = Site("attend", kind="input", index=3, key="mask", optional=True)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 4, generator=g), torch.randn(5, 5, generator=g)


def test_keyword_input_site_reads_positional_and_keyword_calls(data):
    x, mask = data
    m = Caller()
    with Tap(m, {"mask": MASK, "q": Site("attend", kind="input")}) as tap:
        m(x, mask)
    recs = tap.records["mask"]
    assert [r.call_index for r in recs] == [0, 1]  # third call passed no mask: skipped, still counted
    assert torch.equal(recs[0].value, mask) and torch.equal(recs[1].value, mask * 2)
    assert len(tap.records["q"]) == 3
    assert site_name(MASK) == "attend:input[3]" and site_name(Site("a", kind="input", key="m")) == "a:input[m]"


def test_required_keyword_site_raises_when_absent(data):
    x, mask = data
    m = Caller()
    with pytest.raises(ValueError, match="'mask'"), Tap(m, [Site("attend", kind="input", key="mask")]):
        m(x, mask)  # the third call has no mask and the site is not optional
    with pytest.raises(ValueError, match="kind must be 'input'"):
        Site("attend", key="mask")


@pytest.mark.parametrize("mode", ["hook", "wrap"])
def test_intervention_on_keyword_input(data, mode):
    x, mask = data
    m = Caller()
    snap = module_snapshot(m)
    base = m(x, mask)
    with Intervention(m, {MASK: lambda v, meta: v}, mode=mode):
        same = m(x, mask)
    assert all(torch.equal(a, b) for a, b in zip(base, same))  # identity edit: exact no-op
    seen: list[int] = []

    def zero(v: torch.Tensor, meta: dict) -> torch.Tensor:
        seen.append(meta["call_index"])
        return torch.zeros_like(v)

    with Intervention(m, {MASK: zero}, mode=mode):
        edited = m(x, mask)
    want = m.attend(x, x, x)  # a zero additive mask == no mask
    assert seen == [0, 1]
    assert torch.allclose(edited[0], want, atol=1e-6) and torch.allclose(edited[1], want, atol=1e-6)
    assert not torch.allclose(base[0], want, atol=1e-3) and not torch.allclose(base[1], want, atol=1e-3)
    assert torch.equal(edited[2], base[2])
    assert_model_unchanged(m, snap)
    assert all(torch.equal(a, b) for a, b in zip(m(x, mask), base))


def test_reduce_records_a_statistic_per_call(data):
    x, mask = data
    m = Caller()
    rms = lambda v, meta: v.pow(2).mean().sqrt()
    with Tap(m, {"out": Site("attend"), "q": Site("attend", kind="input")}, reduce={"out": rms}) as tap:
        outs = m(x, mask)
    assert [float(r.value) for r in tap.records["out"]] == [float(o.pow(2).mean().sqrt()) for o in outs]
    assert all(r.value.ndim == 0 for r in tap.records["out"])
    assert torch.equal(tap.records["q"][0].value, x)  # sites without a reduce keep the value
    with Tap(m, [Site("attend")], reduce=rms) as one:  # one callable for every site
        m(x, mask)
    assert torch.equal(one.stack("attend"), tap.stack("out"))
    with pytest.raises(KeyError, match="nope"):
        Tap(m, [Site("attend")], reduce={"nope": rms})
    with pytest.raises(TypeError, match="reduce"), Tap(m, [Site("attend")], reduce=lambda v, meta: 1.0):
        m(x, mask)
