"""Architectures: shapes on 1-D, 1-channel and 3-channel inputs, known sizes, and the vmap ensemble."""

import pytest
import torch
from torch import nn

from privdyn.errors import PrivdynError
from privdyn.models import MODELS, build_model
from privdyn.training.ensemble import EnsembleGroup, model_seed

SMALL = {"mlp": {"width": 16}, "cnn": {"width": 4, "depth": 2}, "resnet18": {"width": 4},
         "wrn": {"width": 1, "depth": 10}}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 40)])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_output_shape_on_images_and_sequences(arch, shape, norm):
    model = build_model(arch, shape, 7, norm=norm, **SMALL[arch])
    assert model(torch.randn(5, *shape)).shape == (5, 7)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    has_gn = any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert (has_bn, has_gn) == (norm == "batch", norm == "group")


def test_known_parameter_counts():
    # ResNet-18 (CIFAR variant) for CIFAR-10: 11,173,962 parameters (kuangliu/pytorch-cifar).
    assert n_params(build_model("resnet18", (3, 32, 32), 10)) == 11_173_962
    # WRN-28-2 for CIFAR-10: 1,467,610 parameters (the FixMatch/MixMatch backbone, "1.5M").
    assert n_params(build_model("wrn", (3, 32, 32), 10)) == 1_467_610


def test_cifar_variant_stem_has_no_downsampling():
    m = build_model("resnet18", (3, 32, 32), 10)
    stem = m[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(x, (nn.MaxPool2d, nn.MaxPool1d)) for x in m.modules())
    # the feature map entering the head is 32 / 8 = 4 pixels wide: three stride-2 stages
    feats = m[:-2](torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 512, 4, 4)


def test_wrn_depth_and_width():
    m = build_model("wrn", (3, 32, 32), 10, width=4, depth=16)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3)]
    assert len(convs) == 3 * 2 * 2 + 1  # 3 groups of n = 2 blocks of two 3x3 convs, and the stem
    assert max(c.out_channels for c in convs) == 64 * 4


@pytest.mark.parametrize("arch,kw,needle", [
    ("wrn", {"depth": 27}, r"6n \+ 4"), ("resnet18", {"depth": 34}, "depth 18"),
    ("nope", {}, "available"),
])
def test_bad_model_settings_name_the_fix(arch, kw, needle):
    with pytest.raises(PrivdynError, match=needle):
        build_model(arch, (3, 8, 8), 10, **kw)


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "wrn"])
def test_conv_nets_reject_tabular_inputs(arch):
    with pytest.raises(PrivdynError, match="arch=mlp"):
        build_model(arch, (16,), 3)


def test_none_takes_the_arch_default():
    a = build_model("wrn", (3, 8, 8), 10, width=None, depth=None)
    b = build_model("wrn", (3, 8, 8), 10, width=2, depth=28)
    assert n_params(a) == n_params(b)


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "wrn"])
@pytest.mark.parametrize("channels", [1, 3])
def test_vmapped_batchnorm_equals_each_plain_module(arch, channels):
    """A group's train-mode forward and its K sets of running statistics equal K plain modules'."""
    shape = (channels, 8, 8)
    factory = lambda: build_model(arch, shape, 5, norm="batch", **SMALL[arch])  # noqa: E731
    ids = [3, 7]
    group = EnsembleGroup(factory, ids, seed=11, device=torch.device("cpu"))
    plain = []
    for m in ids:
        torch.manual_seed(model_seed(11, m))
        plain.append(factory())
    x = torch.randn(len(ids), 6, *shape)
    logits = group.forward(x, train=True)
    for k, mod in enumerate(plain):
        mod.train()
        torch.testing.assert_close(logits[k], mod(x[k]), rtol=1e-4, atol=1e-5)
        for name, buf in mod.named_buffers():
            torch.testing.assert_close(group.buffers[name][k], buf)
    # eval mode uses the running statistics, model by model
    xe = torch.randn(4, *shape)
    out = group.forward(xe, train=False, shared_input=True)
    for k, mod in enumerate(plain):
        mod.eval()
        torch.testing.assert_close(out[k], mod(xe), rtol=1e-4, atol=1e-5)


def test_module_roundtrip_through_the_group():
    factory = lambda: build_model("resnet18", (1, 8, 8), 3, width=2)  # noqa: E731
    group = EnsembleGroup(factory, [0, 1], seed=0, device=torch.device("cpu"))
    mod = group.module(1)
    for n, v in mod.state_dict().items():
        src = group.params.get(n, group.buffers.get(n))
        torch.testing.assert_close(v, src[1])
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(1.0)
    group.set_model(0, mod)
    for n, p in mod.named_parameters():
        torch.testing.assert_close(group.params[n][0], p)
