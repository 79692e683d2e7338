"""Contract: the TDM maths (timesteps, exact sigma, transition kernel, losses) match BLADE Sec. 3.3."""

from __future__ import annotations

import math

import pytest
import torch

from blade_ops.families import get_family
from blade_ops.sampling import FlowMatching, VPrediction
from blade_ops.sampling.schedulers import build_scheduler
from training import tdm


def params():
    return [FlowMatching(1000), VPrediction(build_scheduler(get_family("cogvideox")).alphas_cumprod.clone())]


def test_rollout_timesteps():
    assert tdm.rollout_timesteps(8).tolist() == [999, 874, 749, 624, 499, 374, 249, 124]


def test_sigma_is_exact_for_every_integer_timestep():
    a, s = tdm.alpha_sigma(FlowMatching(1000), torch.arange(1000))
    assert torch.allclose(s, torch.arange(1000, dtype=torch.float64) / 1000)
    assert torch.allclose(a + s, torch.ones(1000, dtype=torch.float64))


def test_training_timesteps_ranges():
    generators = [torch.Generator().manual_seed(s) for s in range(4000)]
    t_g, t_mid, t = tdm.draw_training_timesteps(generators, 8, 1000, 980)
    assert set(t_g.tolist()) == {124, 249, 374, 499, 624, 749, 874, 999}
    assert torch.equal(t_mid, t_g - 124)
    assert (t >= t_mid.clamp_min(1)).all() and (t < 980).all() and (t >= 1).all()


@pytest.mark.parametrize("param", params(), ids=["flow", "vpred"])
def test_transition_kernel_preserves_the_marginal(param):
    """x_s = a_s x0 + s_s e1 diffused to t must have signal a_t and total noise variance s_t^2."""
    s, t = torch.tensor([100, 300, 0]), torch.tensor([500, 900, 700])
    x0 = torch.randn(3, 20000, dtype=torch.float64)
    e1, z = torch.randn_like(x0), torch.randn_like(x0)
    x_s = param.add_noise(x0, e1, s)
    x_t = tdm.diffuse(param, x_s, s, t, z)
    a_t, s_t = tdm.alpha_sigma(param, t)
    resid = x_t - a_t[:, None] * x0
    assert torch.allclose(resid.std(dim=1), s_t, rtol=0.03)


def test_student_loss_gradient_points_from_fake_to_teacher():
    x0 = torch.zeros(2, 4, requires_grad=True)
    teacher, fake = torch.full((2, 4), 1.0), torch.zeros(2, 4)
    loss = tdm.student_loss(x0, teacher, fake, c=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and (x0.grad < 0).all()  # descending moves x0 towards the teacher
    c = 1e-3
    assert math.isclose(loss.item(), math.sqrt(1 + c * c) - c, rel_tol=1e-6)


def test_huber_c_rule():
    assert math.isclose(tdm.huber_c((16, 21, 60, 104)), 1e-3 * math.sqrt(16 * 21 * 60 * 104 / 16384))


def test_fake_loss_is_zero_for_the_exact_denoiser():
    param = FlowMatching(1000)
    x0, eps = torch.randn(2, 8), torch.randn(2, 8)
    t = torch.tensor([300, 800])
    x_t = param.add_noise(x0, eps, t)
    assert tdm.fake_score_loss(param, eps - x0, x_t, t, x0).item() < 1e-10
