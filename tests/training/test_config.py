"""Contract: the distillation config has the paper's defaults, validates its values and takes overrides."""

from __future__ import annotations

import pytest

from training.config import DistillConfig, load_config


def test_defaults_are_the_papers():
    c = DistillConfig()
    assert (c.lora_rank, c.lora_alpha, c.num_steps, c.eta) == (64, 64.0, 8, 0.9)
    assert (c.adam_beta1, c.adam_beta2, c.adam_weight_decay, c.max_grad_norm) == (0.0, 0.95, 1e-4, 1.0)
    assert (c.learning_rate, c.learning_rate_fake, c.lr_warmup_steps, c.max_train_steps) == (1e-4, 5e-4, 5, 300)
    assert c.lora_targets == ("to_q", "to_k", "to_v", "to_out.0")
    assert c.teacher_guidance("wan") == 5.0 and c.teacher_guidance("cogvideox") == 3.5
    assert c.reg_weight("wan") == 0.0 and c.reg_weight("cogvideox") == 0.5


def test_file_plus_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lora_rank: 16\nasa_overrides: {tau: 0.9}\nlora_targets: [to_q, to_k]\n")
    c = load_config(str(path), ["--lora-rank", "8", "--asa=false", "--eta", "0.5"])
    assert (c.lora_rank, c.asa, c.eta) == (8, False, 0.5)
    assert (c.lora_targets, c.asa_overrides) == (("to_q", "to_k"), {"tau": 0.9})


@pytest.mark.parametrize("bad", [{"eta": 1.5}, {"lora_rank": 0}, {"mixed_precision": "fp8"}, {"num_steps": 7}])
def test_bad_values_are_named(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        load_config(None, bad)


def test_unknown_key():
    with pytest.raises(ValueError, match="Unknown config keys"):
        load_config(None, {"lora_rnak": 4})


@pytest.mark.parametrize("kind", ["DistributedType.DEEPSPEED", "DistributedType.FSDP"])
def test_sharded_distributed_types_are_refused_up_front(kind):
    from types import SimpleNamespace

    from training.distill import _check_distributed_type

    with pytest.raises(RuntimeError, match="accelerate_ddp.yaml"):
        _check_distributed_type(SimpleNamespace(distributed_type=kind))
    _check_distributed_type(SimpleNamespace(distributed_type="DistributedType.MULTI_GPU"))
