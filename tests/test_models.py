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


@pytest.mark.parametrize("mode", ["grouped", "vmap"])
@pytest.mark.parametrize("arch,shape,norm,kw", [
    ("cnn", (1, 8, 8), "batch", {}), ("cnn", (3, 8, 8), "batch", {}), ("cnn", (2, 12), "group", {}),
    ("resnet18", (1, 8, 8), "batch", {}), ("wrn", (3, 8, 8), "batch", {}), ("wrn", (1, 8, 8), "none", {}),
    # GroupNorm of 2 channels on a 1x1 map is ill-conditioned: wider, so float rounding stays small
    ("resnet18", (3, 8, 8), "group", {"width": 16}), ("mlp", (1, 8, 8), "batch", {}), ("mlp", (6,), "group", {}),
    ("mlp", (1, 8, 8), "none", {}), ("mlp", (6,), "none", {"depth": 3}),
])
def test_group_forward_and_batchnorm_equal_each_plain_module(arch, shape, norm, kw, mode):
    """A group's train-mode forward, its gradients and its K sets of running statistics equal K
    plain modules', whether it runs grouped (models folded into channels) or under vmap.

    In float64: in float32 a pre-activation within rounding of a ReLU's kink can flip sides
    between two exact implementations and change a gradient by a whole sample's share.
    """
    factory = lambda: build_model(arch, shape, 5, norm=norm, **{**SMALL[arch], **kw}).double()  # noqa: E731
    ids = [3, 7, 8]
    group = EnsembleGroup(factory, ids, seed=11, device=torch.device("cpu"))
    assert group.grouped is not None
    if mode == "vmap":
        group.grouped = None
    plain = []
    for m in ids:
        torch.manual_seed(model_seed(11, m))
        plain.append(factory())
    x = torch.randn(len(ids), 6, *shape, dtype=torch.float64)
    y = torch.randint(0, 5, (len(ids), 6))
    logits = group.forward(x, train=True)
    grads = torch.autograd.grad(nn.functional.cross_entropy(logits.reshape(-1, 5), y.reshape(-1), reduction="sum"),
                                list(group.params.values()))
    for k, mod in enumerate(plain):
        mod.train()
        out = mod(x[k])
        torch.testing.assert_close(logits[k], out)
        ref = torch.autograd.grad(nn.functional.cross_entropy(out, y[k], reduction="sum"), list(mod.parameters()))
        for g, r in zip(grads, ref):
            torch.testing.assert_close(g[k], r)
        for name, buf in mod.named_buffers():
            torch.testing.assert_close(group.buffers[name][k], buf)
    # eval mode uses the running statistics, model by model
    xe = torch.randn(4, *shape, dtype=torch.float64)
    out = group.forward(xe, train=False, shared_input=True)
    for k, mod in enumerate(plain):
        mod.eval()
        torch.testing.assert_close(out[k], mod(xe))


def test_models_with_other_layers_run_under_vmap():
    """A layer without a grouped form (here Tanh, LayerNorm) sends the group down the vmap path."""
    factory = lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3), nn.Tanh(), nn.Linear(3, 2))  # noqa: E731
    group = EnsembleGroup(factory, [0, 1], seed=0, device=torch.device("cpu"))
    assert group.grouped is None
    x = torch.randn(5, 4)
    out = group.forward(x, train=False, shared_input=True)
    for k in range(2):
        torch.testing.assert_close(out[k], group.module(k)(x))


@pytest.mark.parametrize("arch,shape,norm,major", [
    ("mlp", (1, 8, 8), "none", True), ("mlp", (6,), "none", True), ("mlp", (6,), "batch", False),
    ("mlp", (6,), "group", False), ("cnn", (1, 8, 8), "batch", False), ("wrn", (3, 8, 8), "none", False),
])
def test_linear_stacks_run_model_major(arch, shape, norm, major):
    """MLPs without normalisation keep activations [K, features, B]; every other model folds the
    K models into channels."""
    group = EnsembleGroup(lambda: build_model(arch, shape, 4, norm=norm, **SMALL[arch]), [0, 1], 0, torch.device("cpu"))
    assert group.model_major is major


def test_grouped_linear_equals_a_loop():
    from privdyn.training.grouped import GroupedLinear

    k, b, d_in, d_out = 3, 4, 5, 2
    lin = GroupedLinear(k, d_in, d_out, bias=True).to_empty(device="cpu")
    nn.init.normal_(lin.weight)
    nn.init.normal_(lin.bias)
    x = torch.randn(b, k * d_in)
    out = lin(x).view(b, k, d_out)
    for j in range(k):
        torch.testing.assert_close(out[:, j], x[:, j * d_in:(j + 1) * d_in] @ lin.weight[j].T + lin.bias[j])
    h = torch.randn(k, d_in, b)  # model-major: [K, in, B] -> [K, out, B]
    out = lin(h)
    for j in range(k):
        torch.testing.assert_close(out[j], lin.weight[j] @ h[j] + lin.bias[j][:, None])


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


@pytest.mark.parametrize("arch,norm", [("cnn", "batch"), ("resnet18", "batch"), ("wrn", "batch"), ("wrn", "none"),
                                       ("resnet18", "group")])
def test_channels_last_runs_the_convolutions_nhwc_and_changes_nothing_but_rounding(arch, norm):
    """training.memory_format: channels_last: every convolution of the grouped model sees NHWC
    inputs, and the logits, gradients and running statistics equal the NCHW group's (float64)."""
    factory = lambda: build_model(arch, (3, 8, 8), 5, norm=norm, **SMALL[arch]).double()  # noqa: E731
    nchw = EnsembleGroup(factory, [0, 4], seed=2, device=torch.device("cpu"))
    nhwc = EnsembleGroup(factory, [0, 4], seed=2, device=torch.device("cpu"), memory_format="channels_last")
    assert nhwc.grouped is not None
    seen = []
    for m in nhwc.grouped.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_pre_hook(
                lambda _m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(2, 6, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 6))
    grads = []
    for group in (nchw, nhwc):
        logits = group.forward(x, train=True)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 5), y.reshape(-1))
        grads.append((logits, torch.autograd.grad(loss, list(group.params.values()))))
    assert seen and all(seen)
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
    for name in nchw.buffers:
        torch.testing.assert_close(nchw.buffers[name], nhwc.buffers[name])
    xe = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(nchw.forward(xe, train=False, shared_input=True),
                               nhwc.forward(xe, train=False, shared_input=True))


def test_memory_format_auto_is_nhwc_on_cuda_only():
    from privdyn.training.engine import memory_format

    assert memory_format("auto", torch.device("cuda")) == "channels_last"
    assert memory_format("auto", torch.device("cpu")) == "contiguous"
    assert memory_format("channels_last", torch.device("cpu")) == "channels_last"
    with pytest.raises(ValueError, match="memory_format"):
        EnsembleGroup(lambda: nn.Linear(2, 2), [0], 0, torch.device("cpu"), memory_format="nhwc")
