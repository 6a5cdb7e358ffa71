"""compute.precision / compute.channels_last: the autocast helper, the gradient scaler and the config."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from irn_core.config import load_config, stage_config, stage_hash
from irn_core.engine.runtime import autocast, gradient_scaler, tensor_to_device, to_memory_format
from irn_core.errors import ConfigError

CPU = torch.device("cpu")


def test_float32_is_a_null_context_and_leaves_float32_arithmetic() -> None:
    context = autocast("float32", CPU)
    assert isinstance(context, contextlib.nullcontext)
    torch.manual_seed(0)
    layer, inputs = nn.Conv2d(3, 4, 3), torch.randn(2, 3, 8, 8)
    with context:
        inside = layer(inputs)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, layer(inputs))


def test_bfloat16_on_cpu_autocasts_convolutions_and_matrix_products() -> None:
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
    inputs = torch.randn(2, 3, 8, 8)
    with autocast("bfloat16", CPU):
        features = conv(inputs)
        logits = linear(features.mean((2, 3)))
    assert features.dtype == torch.bfloat16 and logits.dtype == torch.bfloat16
    reference = conv(inputs)
    assert not torch.equal(features.float(), reference)  # really computed in bfloat16
    torch.testing.assert_close(features.float(), reference, atol=0.05, rtol=0.02)


def test_float16_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="float16.*CUDA"):
        autocast("float16", CPU)
    with pytest.raises(ConfigError, match="float16.*CUDA"):
        gradient_scaler("float16", CPU)
    with pytest.raises(ConfigError, match="not one of"):
        autocast("float64", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_on_cuda_autocasts_and_scales_gradients() -> None:
    device = torch.device("cuda")
    layer = nn.Linear(4, 2).to(device)
    with autocast("float16", device):
        assert layer(torch.randn(3, 4, device=device)).dtype == torch.float16
    assert gradient_scaler("float16", device).is_enabled()
    assert not gradient_scaler("bfloat16", device).is_enabled()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_scaler_is_disabled_off_float16_and_then_changes_nothing(precision: str) -> None:
    scaler = gradient_scaler(precision, CPU)
    assert not scaler.is_enabled()
    loss = torch.tensor(2.5)
    assert scaler.scale(loss) is loss


def test_channels_last_helpers() -> None:
    model = to_memory_format(nn.Conv2d(3, 4, 3), channels_last=True)
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    images = tensor_to_device(torch.randn(2, 3, 8, 8), CPU, channels_last=True)
    assert images.is_contiguous(memory_format=torch.channels_last)
    plain = tensor_to_device(torch.randn(2, 3, 8, 8), CPU)
    assert plain.is_contiguous()
    unchanged = to_memory_format(nn.Conv2d(3, 4, 3), channels_last=False)
    assert unchanged.weight.is_contiguous()


def test_config_defaults_and_float16_on_a_cpu_device_fails_on_load() -> None:
    config = load_config()
    assert config.compute.precision == "float32" and config.compute.channels_last is False
    assert load_config(overrides={"compute": {"precision": "bfloat16"}}).compute.precision == "bfloat16"
    with pytest.raises(ConfigError, match="float16"):
        load_config(overrides={"compute": {"device": "cpu", "precision": "float16"}})
    with pytest.raises(ConfigError):
        load_config(overrides={"compute": {"precision": "half"}})


def test_mixed_precision_changes_the_hashes_of_network_stages_only() -> None:
    float32 = load_config()
    bfloat16 = load_config(overrides={"compute": {"precision": "bfloat16"}})
    assert "compute.precision" not in stage_config(float32, "make_cam")  # float32 hashes as before the option
    for stage in ("train_cam", "make_cam", "train_irn", "irn_infer", "train_deeplab", "maskrcnn_infer"):
        assert stage_hash(bfloat16, stage) != stage_hash(float32, stage), stage
    for stage in ("ir_labels", "pseudo_labels", "evaluate"):
        assert stage_hash(bfloat16, stage) == stage_hash(float32, stage), stage
