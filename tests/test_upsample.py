"""The decoders' upsampling: the same function as interpolate-then-conv, without its activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from locallearn.aux import Decoder
from locallearn.aux.upsample import UpsampleConv2d, upsample_bilinear
from locallearn.losses import reconstruction_loss
from locallearn.measure.saved import SavedTensorMeter

# (feature size, output size, channels): the ResNet-32/110 boundaries, a non-square case, a large ratio.
CASES = [((8, 8), (32, 32), 64), ((16, 16), (32, 32), 32), ((16, 12), (32, 40), 5), ((7, 7), (56, 56), 3)]


def reference(h: torch.Tensor, conv: torch.nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """The decoder's first layer as the papers write it: bilinear upsample, then a zero-padded conv3x3."""
    up = F.interpolate(h, size=size, mode="bilinear", align_corners=True)
    return F.conv2d(up, conv.weight, conv.bias, padding=1)


@pytest.mark.parametrize(("src", "dst", "channels"), CASES)
def test_tap_upsample_conv_is_conv_of_upsample_with_its_gradients(src, dst, channels):
    torch.manual_seed(0)
    conv = UpsampleConv2d(channels, 12, dst).double()
    with torch.no_grad():
        conv.bias.normal_()  # a non-zero bias: it must be added once per output pixel, border included
    h = torch.randn(3, channels, *src, dtype=torch.float64, requires_grad=True)
    ours, ref = conv(h), reference(h, conv, dst)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    inputs = [h, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad(ours, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_tap_upsample_conv_keeps_the_parameters_of_a_plain_conv():
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(16, 12, 3, padding=1, bias=True)
    torch.manual_seed(0)
    ours = UpsampleConv2d(16, 12, (32, 32))
    assert ours.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    h = torch.randn(2, 16, 32, 32)  # already at the output size: a plain conv
    assert torch.equal(ours(h), plain(h))


def test_upsampling_saves_no_activation_for_backward():
    h = torch.randn(4, 64, 8, 8, requires_grad=True)
    with SavedTensorMeter() as meter:
        upsample_bilinear(h, (32, 32))
    assert meter.bytes <= (32 * 8) * 2 * 4  # the two (32, 8) interpolation matrices, nothing per sample


def test_decoder_holds_less_than_one_upsampled_feature():
    """The released decoder keeps the (B, C, 32, 32) upsampled feature for its conv's backward; this one keeps
    the 12-channel maps after the conv and the per-tap maps at the feature's own 8x8 size."""
    b, c = 8, 64
    decoder = Decoder(c, (32, 32))
    h = torch.randn(b, c, 8, 8, requires_grad=True)
    with SavedTensorMeter(exclude=[*decoder.parameters(), *decoder.buffers()]) as meter:
        decoder(h)
    upsampled = b * c * 32 * 32 * 4
    assert meter.bytes - h.numel() * 4 < upsampled // 2


@pytest.mark.parametrize(("channels", "size"), [(64, 8), (32, 16), (16, 32)])
def test_decoder_and_its_loss_are_the_released_ones_in_float64(channels, size):
    """The whole decoder (channels-last after its first conv) and its reconstruction loss against upsample ->
    conv-BN-ReLU -> conv -> sigmoid -> BCE written out with the same parameters, the loss and every gradient."""
    torch.manual_seed(0)
    decoder = Decoder(channels, (32, 32)).double()
    conv, bn, _ = decoder.body[0]
    h = torch.randn(4, channels, size, size, dtype=torch.float64, requires_grad=True)

    def released(h: torch.Tensor) -> torch.Tensor:
        a = reference(h, conv, (32, 32))
        a = F.relu(F.batch_norm(a, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
        return F.binary_cross_entropy(torch.sigmoid(decoder.body[1](a)), x01)

    x01 = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    ours, ref = reconstruction_loss(decoder(h), x01), released(h)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    inputs = [h, *decoder.parameters()]
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
