"""The 1D U-Net denoiser: any length, seamless (shift-equivariant) loops, conditioning, gradients, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wavediff.config import UNetConfig
from wavediff.models.blocks import count_parameters
from wavediff.models.unet import UNet1D, norm_groups

CHANNELS, COND, TOKEN = 4, 6, 5


def tiny(**overrides) -> UNetConfig:
    fields = dict(base_channels=8, channel_mults=[1, 2, 2, 2], attention_levels=[2, 3], head_channels=8)
    return UNetConfig(**{**fields, **overrides})


def build(cfg: UNetConfig | None = None, cond_dim: int = COND, token_dim: int = 0, seed: int = 0) -> UNet1D:
    torch.manual_seed(seed)
    return UNet1D(cfg or tiny(), CHANNELS, cond_dim=cond_dim, token_dim=token_dim)


def perturbed(net: UNet1D) -> UNet1D:
    """Give the zero-initialised layers small random weights, so the output depends on everything."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return net


def inputs(length: int, batch: int = 2, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, CHANNELS, length, generator=g)
    noise = torch.randn(batch, generator=g)
    return x, noise, torch.randn(batch, COND, generator=g), torch.randn(batch, 3, TOKEN, generator=g)


def test_untrained_net_outputs_exactly_zero() -> None:
    net = build(token_dim=TOKEN, cfg=tiny(cross_attention=True))
    x, noise, cond, tokens = inputs(16)
    assert torch.equal(net(x, noise, cond, tokens), torch.zeros_like(x))


def test_any_length_in_zeros_mode() -> None:
    net = perturbed(build()).eval()
    assert net.factor == 8
    with torch.no_grad():
        for length in (1, 2, 3, 7, 8, 13, 31, 64):  # shorter than the factor, odd, prime, exact
            x, noise, cond, _ = inputs(length)
            y = net(x, noise, cond)
            assert y.shape == x.shape
            assert torch.isfinite(y).all() and y.abs().sum() > 0


def test_circular_mode_refuses_a_length_that_does_not_halve_exactly() -> None:
    net = build()
    x, noise, cond, _ = inputs(12)
    with pytest.raises(ValueError, match="length 12 must be a multiple of 8 in circular mode"):
        net(x, noise, cond, circular=True)


def test_circular_mode_is_shift_equivariant() -> None:
    net = perturbed(build(tiny(cross_attention=True), token_dim=TOKEN)).eval()
    x, noise, cond, tokens = inputs(32)
    with torch.no_grad():
        y = net(x, noise, cond, tokens, circular=True)
        for k in (1, 2, 3):
            shift = k * net.factor
            rolled = net(x.roll(shift, -1), noise, cond, tokens, circular=True)
            torch.testing.assert_close(rolled, y.roll(shift, -1), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(y, net(x, noise, cond, tokens), atol=1e-3)  # the mode switch matters


def test_zeros_mode_is_not_circular() -> None:
    net = perturbed(build()).eval()
    x, noise, cond, _ = inputs(32)
    shift = net.factor
    with torch.no_grad():
        diff = (net(x.roll(shift, -1), noise, cond) - net(x, noise, cond).roll(shift, -1)).abs()
    assert diff[..., :2].max() > 1e-3 and diff[..., -2:].max() > 1e-3  # the edges see zeros, not the loop


def test_noise_level_and_cond_change_the_output() -> None:
    net = perturbed(build()).eval()
    x, noise, cond, _ = inputs(16)
    with torch.no_grad():
        y = net(x, noise, cond)
        assert not torch.allclose(y, net(x, noise + 0.5, cond), atol=1e-4)
        assert not torch.allclose(y, net(x, noise, cond + 1.0), atol=1e-4)
        torch.testing.assert_close(y, net(x, noise.clone(), cond.clone()))  # and nothing else does


def test_cond_vector_is_required_exactly_when_built_for_one() -> None:
    x, noise, cond, _ = inputs(16)
    with pytest.raises(ValueError, match=r"expected a \(batch, 6\) vector"):
        build()(x, noise)
    with pytest.raises(ValueError, match="built with cond_dim=0"):
        build(cond_dim=0)(x, noise, cond)
    assert build(cond_dim=0)(x, noise).shape == x.shape
    with pytest.raises(ValueError, match=r"one value per item, shape \(2,\)"):
        build()(x, noise[:1], cond)


def test_cross_attention_uses_the_tokens_and_needs_them() -> None:
    net = perturbed(build(tiny(cross_attention=True), token_dim=TOKEN)).eval()
    x, noise, cond, tokens = inputs(16)
    with torch.no_grad():
        assert not torch.allclose(net(x, noise, cond, tokens), net(x, noise, cond, tokens + 1.0), atol=1e-4)
    with pytest.raises(ValueError, match="tokens: expected"):
        net(x, noise, cond)
    with pytest.raises(ValueError, match="it has no cross-attention"):
        build(token_dim=TOKEN)(x, noise, cond, tokens)  # cfg.cross_attention is off: tokens are a mistake


def test_every_parameter_gets_a_gradient() -> None:
    net = perturbed(build(tiny(cross_attention=True, dropout=0.1), token_dim=TOKEN)).train()
    x, noise, cond, tokens = inputs(13)
    net(x, noise, cond, tokens).pow(2).mean().backward()
    names = [name for name, p in net.named_parameters()]
    assert any(".cross." in n for n in names) and any(".attn." in n for n in names) and "cond_proj.weight" in names
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} took no part in the forward pass"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_a_few_steps_learn_a_fixed_regression() -> None:
    net = build(tiny(cross_attention=True), token_dim=TOKEN)
    x, noise, cond, tokens = inputs(16, batch=4)
    target = torch.tanh(x.roll(1, -1)) * noise[:, None, None]  # depends on neighbours and on the noise level
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (net(x, noise, cond, tokens) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bf16_autocast_forward_and_backward() -> None:
    net = perturbed(build(tiny(cross_attention=True), token_dim=TOKEN))
    x, noise, cond, tokens = inputs(32)
    reference = net(x, noise, cond, tokens, circular=True).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, noise, cond, tokens, circular=True)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.nn.functional.cosine_similarity(y.float().flatten(), reference.flatten(), dim=0) > 0.98
    y.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_state_dict_carries_the_fourier_frequencies() -> None:
    net = perturbed(build(seed=0)).eval()
    copy = build(seed=5).eval()
    assert "fourier.weight" in net.state_dict()
    copy.load_state_dict(net.state_dict())
    x, noise, cond, _ = inputs(16)
    with torch.no_grad():
        assert torch.equal(net(x, noise, cond), copy(x, noise, cond))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="level 4 is out of range"):
        build(tiny(attention_levels=[1, 4]))
    with pytest.raises(ValueError, match="level -1 is out of range"):
        build(tiny(attention_levels=[-1]))
    with pytest.raises(ValueError, match="cross_attention needs at least one level"):
        build(tiny(attention_levels=[], cross_attention=True), token_dim=TOKEN)


def test_norm_groups_divide_the_channels() -> None:
    assert [norm_groups(c) for c in (1, 8, 24, 48, 64, 96, 100, 640)] == [1, 8, 24, 24, 32, 32, 25, 32]


def test_dance_diffusion_size_waveform_model_constructs() -> None:
    cfg = UNetConfig(
        base_channels=128, channel_mults=[1, 1, 2, 2, 4, 4, 4, 4, 4, 4], attention_levels=[6, 7, 8, 9], kernel_size=5
    )
    with torch.device("meta"):  # shapes only: no 700 MB of weights on a shared CPU
        net = UNet1D(cfg, 2, cond_dim=256)
    assert net.factor == 512
    assert 150e6 < count_parameters(net) < 250e6


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_attention_takes_a_fused_kernel_not_the_math_path(kind: str) -> None:
    """scaled_dot_product_attention falls back to its math kernel (an L × L score matrix per head:
    quadratic memory, many times slower) when an input is not contiguous; the fused kernel must run."""
    from torch.profiler import ProfilerActivity, profile

    from wavediff.models.unet import CrossAttention, SelfAttention

    attn = (SelfAttention(32, 16) if kind == "self" else CrossAttention(32, 16, 16)).eval()
    nn.init.normal_(attn.out.weight)  # the residual branch starts at zero; make it count
    x = torch.randn(2, 32, 64)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        out = attn(x, circular=False) if kind == "self" else attn(x, torch.randn(2, 5, 16))
    names = {event.key for event in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in names
    assert not any("math" in name for name in names), sorted(n for n in names if "attention" in n)
    assert any("flash" in name or "efficient" in name for name in names), sorted(names)
    assert not torch.allclose(out, x)
