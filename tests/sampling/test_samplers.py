"""Sampler contract: each registered sampler visits the published timesteps with the published settings, options
are validated, and the x0/eps conversions invert the forward process."""

from __future__ import annotations

import pytest
import torch

from blade_ops.families import COGVIDEOX, WAN, get_family
from blade_ops.pipeline import PRESETS
from blade_ops.sampling import (
    COGVIDEOX_SCHEDULER_DEFAULTS,
    WAN_SCHEDULER_DEFAULTS,
    FlowMatching,
    VPrediction,
    available_samplers,
    build_scheduler,
    make_sampler,
)

WAN_BLADE = [999, 954, 900, 833, 750, 643, 500, 301]  # REFERENCE.md, "about"
COG_BLADE = [999, 874, 749, 624, 499, 374, 249, 124]


def test_registry_names():
    assert {"baseline", "blade", "tdm"} <= set(available_samplers())
    with pytest.raises(ValueError, match="valid samplers: baseline, blade, tdm"):
        make_sampler("euler", WAN)


def test_wan_blade_schedule_matches_published():
    s = make_sampler("blade", WAN)
    assert s.steps == 8
    assert s.scheduler.config.flow_shift == 3.0 and s.scheduler.config.use_flow_sigmas
    assert type(s.scheduler).__name__ == "UniPCMultistepScheduler"
    assert max(abs(int(a) - b) for a, b in zip(s.timesteps, WAN_BLADE, strict=True)) <= 1
    assert len(s.timesteps) == 8


def test_cogvideox_blade_schedule_is_exact():
    s = make_sampler("blade", COGVIDEOX)
    assert type(s.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert s.scheduler.config.timestep_spacing == "trailing"
    assert s.timesteps.tolist() == COG_BLADE


def test_cogvideox_blade_forces_trailing_even_if_model_config_differs():
    s = make_sampler("blade", COGVIDEOX, {"_class_name": "CogVideoXDDIMScheduler", "timestep_spacing": "linspace"})
    assert s.timesteps.tolist() == COG_BLADE


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_tdm_timesteps(name):
    s = make_sampler("tdm", get_family(name))
    assert s.timesteps.tolist() == [999 - 125 * k for k in range(8)]
    assert s.eta == 0.9
    assert make_sampler("tdm", get_family(name), steps=4).timesteps.tolist() == [999, 749, 499, 249]


def test_baseline_defaults_and_presets():
    wan, cog = make_sampler("baseline", WAN), make_sampler("baseline", COGVIDEOX)
    assert wan.steps == cog.steps == 50
    assert wan.scheduler.config.flow_shift == 3.0 and wan.scheduler.config.prediction_type == "flow_prediction"
    assert type(cog.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert cog.timesteps[:3].tolist() == [999, 979, 959]
    base, blade = PRESETS["baseline"], PRESETS["blade"]
    assert (base.guidance(WAN), base.guidance(COGVIDEOX)) == (5.0, 6.0) and base.dynamic_guidance(COGVIDEOX)
    assert not base.dynamic_guidance(WAN) and not base.sparse
    assert (blade.guidance(WAN), blade.guidance(COGVIDEOX)) == (1.0, 1.0) and blade.sparse
    assert blade.sampler == "blade" and not blade.dynamic_guidance(COGVIDEOX)


def test_shipped_defaults_match_stock_configs():
    from blade_ops.models.tiny import tiny_scheduler

    for family, defaults in (("wan", WAN_SCHEDULER_DEFAULTS), ("cogvideox", COGVIDEOX_SCHEDULER_DEFAULTS)):
        stock = tiny_scheduler(family).config
        assert {k: stock[k] for k in defaults} == defaults


def test_scheduler_config_and_shift_override():
    s5 = make_sampler("blade", WAN, {"_class_name": "UniPCMultistepScheduler", "flow_shift": 5.0})
    assert s5.scheduler.config.flow_shift == 5.0 and s5.timesteps[1] > 954
    assert make_sampler("blade", WAN, {"flow_shift": 5.0}, shift=3.0).timesteps[1] == 954
    flow_match = build_scheduler(WAN, {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 7.0})
    assert flow_match.config.flow_shift == 7.0


@pytest.mark.parametrize(
    "name, family, kwargs, message",
    [
        ("baseline", WAN, {"eta": 0.5}, "eta=0.5 applies to the 'tdm' sampler only"),
        ("blade", COGVIDEOX, {"shift": 3.0}, "shift=3.0 applies to flow-matching schedules"),
        ("tdm", WAN, {"shift": 3.0}, "does not apply to 'tdm'"),
        ("tdm", WAN, {"eta": 1.5}, r"eta=1.5 must lie in \[0, 1\]"),
        ("blade", WAN, {"steps": 0}, "steps=0 is invalid"),
        ("blade", WAN, {"shift": -1.0}, "must be positive"),
    ],
)
def test_bad_options_name_the_value(name, family, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sampler(name, family, **kwargs)


def test_flow_sigma_is_exact_for_every_integer_timestep():
    p = FlowMatching()
    t = torch.arange(1000)
    assert torch.equal(p.sigma(t), t.double() / 1000)  # no table: 874 -> 0.874, not a 0.003 fallback
    assert p.sigma(874).item() == pytest.approx(0.874)


def _roundtrip(p, t):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    x_t = p.add_noise(x0, eps, t)
    v = p.velocity(x0, eps) if isinstance(p, FlowMatching) else p.velocity(x0, eps, t)
    return (x0, eps), p.to_x0_eps(x_t, v, t)


@pytest.mark.parametrize("t", [999, 874, 500, 124, torch.tensor([900, 100])])
def test_parameterizations_invert_the_forward_process(t):
    cog = VPrediction(build_scheduler(COGVIDEOX).alphas_cumprod)
    for p in (FlowMatching(), cog):
        (x0, eps), (x0_hat, eps_hat) = _roundtrip(p, t)
        torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)


def test_vprediction_rejects_out_of_range_timestep():
    with pytest.raises(ValueError, match="outside 0..999"):
        VPrediction(build_scheduler(COGVIDEOX).alphas_cumprod).alpha_bar(1000)


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_tdm_with_an_oracle_model_recovers_x0(name):
    """With the exact model output for a fixed x0 and eta = 1 (no fresh noise), every step predicts x0."""
    s = make_sampler("tdm", get_family(name), eta=1.0)
    p = s.param
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 2, 3, 4, 4, generator=g), torch.randn(1, 2, 3, 4, 4, generator=g)
    x = eps.clone()
    for i, t in enumerate(s.timesteps):
        if i == 0:
            x = p.add_noise(x0, eps, t)
        v = p.velocity(x0, eps) if name == "wan" else p.velocity(x0, eps, t)
        x = s.step(i, v, x, g)
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)
