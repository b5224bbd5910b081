"""Issue 14, finding 10 (artifact part): a conceptor artifact is refused at load / attach time, not at the first
action: a per-step operator whose step count differs from the policy's num_inference_steps, and a matrix that
is not a conceptor (symmetric, eigenvalues in [0, 1])."""

from __future__ import annotations

import pytest
import torch

from latentstack.steering.intervention import SteeringArtifact

SITE = "expert.layer2"


def _card(**kw):
    return {"site": SITE, "beta": 0.5, "alpha": 1.0, "strategy": "per_step", **kw}


def test_per_step_conceptor_with_other_step_count_is_refused_at_attach(vla, tmp_path):
    d = vla.config.d_model
    steps = vla.config.num_inference_steps
    assert steps != 1
    C = 0.5 * torch.eye(d).expand(1, d, d).clone()  # a valid conceptor, 1 step
    SteeringArtifact(C, _card()).save(tmp_path / "one_step")
    art = SteeringArtifact.load(tmp_path / "one_step", expected_d=d)
    with pytest.raises(ValueError, match="num_inference_steps"):
        art.intervention(vla)  # attach time: no action has been asked for
    ok = SteeringArtifact(0.5 * torch.eye(d).expand(steps, d, d).clone(), _card())
    with ok.intervention(vla):  # the matching count attaches
        pass


@pytest.mark.parametrize("make,match", [
    (lambda d: 1000.0 * torch.eye(d), "eigenvalues"),
    (lambda d: -0.5 * torch.eye(d), "eigenvalues"),
    (lambda d: torch.triu(torch.full((d, d), 0.1)), "symmetric"),
    (lambda d: torch.stack([0.5 * torch.eye(d), 2.0 * torch.eye(d)]), "eigenvalues"),
])
def test_matrix_that_is_not_a_conceptor_is_refused_at_load(tmp_path, make, match):
    d = 16
    SteeringArtifact(make(d), _card(strategy="global")).save(tmp_path / "bad")
    with pytest.raises(ValueError, match=match):
        SteeringArtifact.load(tmp_path / "bad")


def test_matrix_that_is_not_a_conceptor_is_refused_at_attach(vla):
    d = vla.config.d_model
    with pytest.raises(ValueError, match="eigenvalues"):
        SteeringArtifact(1000.0 * torch.eye(d), _card(strategy="global")).intervention(vla)


def test_released_code_and_may_be_non_symmetric_but_never_amplifies(tmp_path):
    """preset and_mode="repo" (A (A + B − AB)⁻¹ B, not symmetric) loads; the same card with 1000·I does not."""
    from latentstack.steering import conceptors as cz

    g = torch.Generator().manual_seed(0)
    d = 16
    X = torch.randn(64, d, generator=g, dtype=torch.float64)
    Y = torch.randn(64, d, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 2.0, d, dtype=torch.float64))
    A, B = (cz.conceptor(Z.T @ Z / 64, 1.0) for Z in (X, Y))
    C = cz.conceptor_and_repo(A, torch.eye(d, dtype=torch.float64) - B).float()
    assert (C - C.T).abs().max() > 1e-4  # really non-symmetric
    repo = _card(strategy="global", preset={"name": "repo", "and_mode": "repo"})
    SteeringArtifact(C, repo).save(tmp_path / "repo")
    SteeringArtifact.load(tmp_path / "repo")
    SteeringArtifact(1000.0 * torch.eye(d), repo).save(tmp_path / "repo_bad")
    with pytest.raises(ValueError, match="spectral norm|eigenvalues"):
        SteeringArtifact.load(tmp_path / "repo_bad")
