"""Networks, graph and config: registry, receptive radius, kernel application, losses, config loading."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.training_helpers import ALL_CONFIGS, CONFIGS, REPO, tiny_config
from training.archs import ARCH_REGISTRY, build_arch
from training.archs.blocks import GLOBAL_POOL_RADIUS, RCAB, ChannelAttention, DifferencesConv2d
from training.archs.kernels import _apply_unfolded, apply_kernels
from training.archs.summary import flops_per_megapixel, measured_receptive_radius
from training.config import LossConfig, load_config, load_config_json
from training.graph import build_graph, example_inputs, finite_differences
from training.losses import DenoiseLoss, stage_loss, tonemap


def test_registry_names_every_architecture_and_rejects_unknown_arguments():
    names = {"kpcn", "kprcn", "kprcan", "direct_cnn", "direct_rcn", "direct_rcan", "kpunet"}
    assert names <= set(ARCH_REGISTRY)
    with pytest.raises(ValueError, match="unknown model.type"):
        build_arch({"type": "nope"}, 10)
    with pytest.raises(ValueError, match="takes no argument predict_kernel"):
        build_arch({"type": "direct_cnn", "predict_kernel": 5}, 10)


def test_kernel_application_matches_unfold_reference():
    torch.manual_seed(0)
    color, logits = torch.rand(2, 3, 9, 11), torch.randn(2, 25, 9, 11)
    weights = torch.softmax(logits, 1)
    patches = F.unfold(color, 5, padding=2).view(2, 3, 25, 9, 11)
    expected = (patches * weights[:, None]).sum(2)
    assert torch.allclose(apply_kernels(color, logits, 5), expected, atol=1e-6)


def test_gpu_kernel_path_matches_the_offset_loop_with_gradients():
    """CUDA tensors take ``_apply_unfolded``; it must give the offset loop's values and gradients."""
    torch.manual_seed(0)
    color, logits = torch.rand(2, 3, 10, 7), torch.randn(2, 49, 10, 7)
    results = []
    for apply in (apply_kernels, lambda c, lg, k: _apply_unfolded(c, torch.exp(lg - lg.amax(1, True)), k)):
        c, lg = color.clone().requires_grad_(), logits.clone().requires_grad_()
        out = apply(c, lg, 7)
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), c.grad, lg.grad))
    for loop, unfolded in zip(*results, strict=True):
        assert torch.allclose(loop, unfolded, atol=1e-5)


@pytest.mark.parametrize("size", [3, 5])
def test_folded_first_convolution_is_the_convolution_of_the_differences_of_the_zero_extended_image(size):
    torch.manual_seed(0)
    differenced, extra = 4, 2
    conv = torch.nn.Conv2d(3 * differenced + extra, 6, size, padding=size // 2)
    folded = DifferencesConv2d.from_convolution(conv, differenced)
    x = torch.randn(1, differenced + extra, 11, 13)
    # the definition, written out: x extended by zeros, its forward differences, an unpadded convolution
    radius = size // 2
    plain = F.pad(x[:, :differenced], (radius, radius + 1, radius, radius + 1))
    dx = (plain[..., :, 1:] - plain[..., :, :-1])[..., :-1, :]
    dy = (plain[..., 1:, :] - plain[..., :-1, :])[..., :, :-1]
    rest = F.pad(x[:, differenced:], (radius,) * 4)
    expected = F.conv2d(torch.cat([plain[..., :-1, :-1], dx, dy, rest], 1), conv.weight, conv.bias)
    actual = folded(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(folded.baked()(x), actual, atol=1e-5, rtol=0)
    # away from the edge it is the convolution of the finite differences the graph used to build
    dx_zero, dy_zero = finite_differences(x[:, :differenced])
    unfolded = conv(torch.cat([x[:, :differenced], dx_zero, dy_zero, x[:, differenced:]], 1))
    inner = (..., slice(radius + 1, -radius - 1), slice(radius + 1, -radius - 1))
    torch.testing.assert_close(actual[inner], unfolded[inner], atol=1e-5, rtol=0)
    assert (actual - unfolded).abs().max() > 1e-3  # at the edge they differ: the check can fail
    actual.square().sum().backward()  # trains the unfolded parameters, which the checkpoint keeps
    assert folded.weight is conv.weight and conv.weight.grad.abs().sum() > 0
    assert conv.weight.grad[:, -extra:].abs().sum() > 0


def test_graph_folds_the_differences_and_its_flops_count_the_folded_kernel():
    graph = build_graph(tiny_config("fast"))
    first = graph.nets["specular"].encoders[0][0][0]
    assert isinstance(first, DifferencesConv2d) and first.in_channels == graph.feature_channels
    assert graph.network_input_channels * 3 == graph.feature_channels
    unfolded_first = 2 * first.out_channels * graph.feature_channels * 9  # FLOPs per pixel, 3x3 over 3x
    folded_first = 2 * first.out_channels * graph.network_input_channels * 16  # 4x4 over x
    without = build_graph(tiny_config("fast", ["graph.use_gradients=false"]))
    assert not without.differences_folded and without.network_input_channels == without.feature_channels
    saved = flops_per_megapixel(graph) - flops_per_megapixel(without)  # the folded kernel's extra taps
    expected = 2 * (folded_first - 2 * first.out_channels * graph.network_input_channels * 9) * 1e6
    assert saved == pytest.approx(expected, rel=1e-6) and folded_first < unfolded_first


@pytest.mark.parametrize("name, overrides", [("fast", []), ("kpcn", ["graph.use_variance=true"])])
def test_folded_graph_is_the_graph_with_built_differences_away_from_the_edge(name, overrides):
    """The fold (5x5 first convolutions of kpcn, a variance channel without differences included) changes
    nothing farther than the receptive radius from the image's edge."""
    torch.manual_seed(0)
    graph = build_graph(tiny_config(name, overrides)).eval()
    built = copy.deepcopy(graph)
    for net in built.nets.values():  # the same parameters in plain convolutions, the differences built
        for path, module in list(net.named_modules()):
            if isinstance(module, DifferencesConv2d):
                plain = torch.nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                                        padding=module.padding)
                plain.weight, plain.bias = module.weight, module.bias
                owner, _, attribute = path.rpartition(".")
                setattr(net.get_submodule(owner) if owner else net, attribute, plain)
    built.differences_folded = False
    assert graph.differences_folded and graph.network_input_channels < built.network_input_channels
    radius, multiple = graph.receptive_radius, graph.size_multiple
    size = -(-(2 * radius + 3 * multiple) // multiple) * multiple
    with torch.no_grad():
        inputs = example_inputs(graph, size, size)
        pairs = list(zip(graph(**inputs), built(**inputs), strict=True))
    inner = (..., slice(radius, -radius), slice(radius, -radius))
    for folded, plain in pairs:
        torch.testing.assert_close(folded[inner], plain[inner], atol=2e-5, rtol=1e-5)
    assert max((folded - plain).abs().max() for folded, plain in pairs) > 1e-4  # the edge band differs


def test_local_channel_attention_pools_exactly_over_the_window():
    torch.manual_seed(0)
    attention = ChannelAttention(8, reduction=2, pool="local", window=5)
    x = torch.randn(1, 8, 12, 13)
    squeezed = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)  # pool first, then reduce
    expected = x * torch.sigmoid(attention.expand(torch.relu(attention.reduce(squeezed))))
    assert torch.allclose(attention(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_declared_receptive_radius_covers_the_measured_one(name):
    graph = build_graph(tiny_config(name))
    radius = min(graph.receptive_radius, 40)
    size = -(-(2 * radius + 9) // graph.size_multiple) * graph.size_multiple
    measured = measured_receptive_radius(graph, size)
    assert 0 < measured <= graph.receptive_radius
    if name == "kprcan_global":
        assert graph.receptive_radius >= GLOBAL_POOL_RADIUS and measured >= size // 2 - 1


def test_full_presets_have_the_documented_shape():
    fast = build_graph(load_config(CONFIGS / "fast.yaml"))
    params = sum(p.numel() for p in fast.parameters())
    # the CPU default must stay within 2x OIDN's time per frame: ~120 GFLOP/MP measured 1.07x (MODEL_CARD)
    assert 1_000_000 <= params <= 3_000_000 and fast.size_multiple == 16
    assert flops_per_megapixel(fast, 64) / 1e9 <= 130
    kpcn = build_graph(load_config(CONFIGS / "kpcn.yaml"))
    assert kpcn.size_multiple == 1 and kpcn.receptive_radius == 9 * 2 + 1  # 9 convs of 5x5, + gradients
    four_block = build_graph(load_config(CONFIGS / "kprcan_4block.yaml"))
    local = four_block.nets["diffuse"].receptive_radius - 4 * 15  # minus four 31x31 attention windows
    assert local == kpcn.nets["diffuse"].receptive_radius


def test_graph_outputs_are_finite_and_non_negative_for_kernel_models():
    graph = build_graph(tiny_config("kpcn")).eval()
    inputs = example_inputs(graph, 16, 20)
    inputs["depth"][..., 0, 0] = 1e10  # Cycles' background depth
    with torch.no_grad():
        diffuse, specular = graph(**inputs)
    assert diffuse.shape == (1, 3, 16, 20) and specular.shape == (1, 3, 16, 20)
    assert torch.isfinite(diffuse).all() and (specular >= -1e-6).all()


def test_albedo_max_bounds_what_the_networks_see_of_lights_albedo():
    """Cycles writes a light's radiance into Denoising Albedo; with graph.albedo_max the graph sees 1
    there, so 1,000 and 1 give the same output, and albedos inside [0, 1] are untouched."""
    clamped = build_graph(tiny_config("kpcn", ["graph.albedo_max=1.0"])).eval()
    plain = build_graph(tiny_config("kpcn")).eval()
    plain.load_state_dict(clamped.state_dict())
    inputs = example_inputs(clamped, 12, 12)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(clamped(**inputs), plain(**inputs), strict=True))
        light, white = dict(inputs), dict(inputs)
        light["albedo"], white["albedo"] = inputs["albedo"].clone(), inputs["albedo"].clone()
        light["albedo"][..., 5, 5], white["albedo"][..., 5, 5] = 1000.0, 1.0
        assert all(torch.equal(a, b) for a, b in zip(clamped(**light), clamped(**white), strict=True))
        assert not torch.equal(plain(**light)[1], plain(**white)[1])


def test_hdr_loss_masks_non_finite_targets_and_tonemap_matches_srgb():
    loss = DenoiseLoss(LossConfig(type="l1"))
    pred, target = torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    target[..., 0, 0] = float("nan")
    pred[..., 0, 0] = 5.0  # only differs where the target is invalid
    assert float(loss(pred, target)) == 0.0
    combined = DenoiseLoss(LossConfig(type="combined", range="tonemapped"))
    assert float(combined(pred, target)) > 0
    x = torch.tensor([0.0, 0.002, 0.5, 1.0, 3.0])
    expected = torch.tensor([0.0, 12.92 * 0.002, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.0, 1.0])
    assert torch.allclose(tonemap(x, "srgb"), expected, atol=1e-6)


def test_config_layers_overrides_and_errors(tmp_path):
    config = load_config([CONFIGS / "ablation_kpcn_batchnorm.yaml", CONFIGS / "tiny.yaml"],
                         ["train.steps=7", "model.width=6"])
    assert config.model == {"type": "kpcn", "width": 6, "depth": 4, "kernel_size": 3, "predict_kernel": 5,
                            "norm": "batch"}
    assert config.train.steps == 7 and config.data.kind == "synthetic" and config.stages[1].target == "joint"
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(CONFIGS / "kpcn.yaml") + "\ndata: {patchsize: 3}\n")
    with pytest.raises(ValueError, match="unknown config key data.patchsize"):
        load_config(bad)
    # YAML 1.1 reads 1e-4 as a string: numeric strings count for float keys, other wrong types fail
    assert load_config(CONFIGS / "tiny.yaml", ["optimizer.lr=1e-4"]).optimizer.lr == 1e-4
    for wrong, message in (("train.steps=1.5", "train.steps must be int"),
                           ("graph.albedo_max=bright", "graph.albedo_max must be float")):
        with pytest.raises(ValueError, match=message):
            load_config(CONFIGS / "tiny.yaml", [wrong])
    # synthetic patches have no residual to denoise: the flag would mislabel the exported model
    with pytest.raises(ValueError, match="data.denoise_residual needs data.kind shards"):
        load_config(CONFIGS / "tiny.yaml", ["data.denoise_residual=true"])


def test_summary_command_prints_parameters_flops_and_radius():
    result = subprocess.run([sys.executable, "-m", "training.archs.summary", "--config",
                             str(CONFIGS / "fast.yaml")], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "GFLOP per megapixel" in result.stdout
    graph = build_graph(load_config(CONFIGS / "fast.yaml"))
    assert f"receptive radius {graph.receptive_radius} px" in result.stdout
    assert f"size multiple {graph.size_multiple}" in result.stdout


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.train.steps > 0 and config.model["type"]
    # trains on the shards `pack` writes for its flags: folders ending in -d, -r, -v as it names them
    flags = (("d", config.data.demodulate_specular), ("r", config.data.denoise_residual),
             ("v", config.data.separate_volume))
    suffix = "".join(f"-{letter}" for letter, packed in flags if packed)
    assert all(folder.endswith(suffix) for folder in config.data.train + config.data.val)


def test_tonemapped_component_loss_trains_bright_diffuse_light():
    """A sun-lit floor: diffuse light 1.5 (irradiance above 1) on albedo 0.3 is displayed at 0.45. The
    component stage must see that contribution, not the light clamped at 1: a prediction of 2.0 then
    costs something and gets a gradient."""
    config = tiny_config("fast")  # loss.range: tonemapped
    graph = build_graph(config)
    shape = (1, 3, 8, 8)
    diffuse = torch.full(shape, 2.0, requires_grad=True)
    specular = torch.full(shape, 0.1, requires_grad=True)
    outputs = {"diffuse": diffuse, "specular": specular,
               "diffuse_space": graph.to_space("diffuse", diffuse),
               "specular_space": graph.to_space("specular", specular)}
    batch = {"diffuse_reference": torch.full(shape, 1.5), "specular_reference": torch.full(shape, 0.1),
             "diffuse_color": torch.full(shape, 0.3)}
    loss = stage_loss(DenoiseLoss(config.loss), graph, outputs, batch, "components")
    loss.backward()
    assert loss.item() > 0 and diffuse.grad.abs().min() > 0
    # the shipped models' recipe (light clamped at 1) stays available, and its blind spot is real
    light = tiny_config("fast", ["loss.tonemapped_diffuse=light"])
    assert stage_loss(DenoiseLoss(light.loss), graph, outputs, batch, "components").item() == 0
    # configs that do not name it get the new default, which the shipped models were trained with
    assert tiny_config("fast").loss.tonemapped_diffuse == "contribution"
    for preset in ("fast", "quality"):
        assert load_config_json(REPO / "models" / f"{preset}.json").loss.tonemapped_diffuse == "contribution"


@pytest.mark.parametrize("spec", [
    {"type": "kprcan", "n_groups": 1, "closing_conv": False, "tail_kernel_size": 1},  # kprcan_4block's shape
    {"type": "kprcan", "n_groups": 2, "closing_conv": True},
    {"type": "kprcn", "n_blocks": 2},
], ids=["kprcan_no_closing_conv", "kprcan", "kprcn"])
def test_residual_networks_pass_the_identity_once(spec):
    """With every residual branch zeroed a residual network is its head and tail: the head's features
    reach the tail once, not twice through a group skip and a long skip that add the same identity."""
    torch.manual_seed(0)
    extra = {"reduction": 4, "attention_window": 5} if spec["type"] == "kprcan" else {}
    net = build_arch({**spec, "width": 8, "kernel_size": 3, "predict_kernel": 3, **extra}, 10).eval()
    with torch.no_grad():
        for parameter in net.body.parameters():
            parameter.zero_()
        features, color = torch.rand(1, 10, 12, 12), torch.rand(1, 3, 12, 12)
        expected = apply_kernels(color, net.tail(net.head(features)), 3)
        assert torch.allclose(net(features, color), expected, atol=1e-6)


def test_direct_cnn_is_kpcn_layers_predicting_colour_without_a_skip():
    """Bako et al.'s DPCN: KPCN's plain stack of convolutions whose last layer outputs the colour."""
    torch.manual_seed(0)
    net = build_arch({"type": "direct_cnn", "width": 8, "depth": 4, "kernel_size": 3}, 10).eval()
    features = torch.rand(1, 10, 12, 12)
    with torch.no_grad():
        assert torch.equal(net(features, torch.rand(1, 3, 12, 12)), net.tail(net.body(net.head(features))))
    kpcn = build_arch({"type": "kpcn", "width": 8, "depth": 4, "kernel_size": 3, "predict_kernel": 3}, 10)
    shapes = [p.shape for p in net.parameters()]
    assert shapes[:-2] == [p.shape for p in kpcn.parameters()][:-2] and shapes[-2][0] == 3


def test_kpunet_takes_a_kernel_size_per_level_and_loads_larger_kernels_by_their_central_taps():
    spec = {"type": "kpunet", "widths": [8, 8, 8], "predict_kernel": 5}
    larger = build_arch(spec, 6).eval()
    smaller = build_arch({**spec, "predict_kernel": [3, 5, 5]}, 6).eval()
    assert smaller.heads[0].out_channels == 9 + 1 and smaller.heads[1].out_channels == 25 + 1
    assert smaller.receptive_radius <= larger.receptive_radius
    with torch.no_grad():  # the outer ring of the full-resolution 5x5 kernels gets no weight
        grid = torch.arange(25).view(5, 5)
        outer = [int(i) for i in grid.flatten() if i not in grid[1:4, 1:4].flatten()]
        larger.heads[0].bias[outer] = -1e4
    smaller.load_state_dict(larger.state_dict())
    features, color = torch.randn(2, 6, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(smaller(features, color), larger(features, color), atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):  # the other way round is no kernel crop
        build_arch({**spec, "predict_kernel": [7, 5, 5]}, 6).load_state_dict(larger.state_dict())
    # two signals (a colour-denoising diffuse network): each signal's kernels are cropped
    two = build_arch({**spec, "signals": 2}, 6).eval()
    with torch.no_grad():
        two.heads[0].bias[[i + offset for offset in (0, 26) for i in outer]] = -1e4
    two_smaller = build_arch({**spec, "predict_kernel": [3, 5, 5], "signals": 2}, 6).eval()
    two_smaller.load_state_dict(two.state_dict())
    other = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        pairs = zip(two_smaller(features, color, other), two(features, color, other), strict=True)
        for got, expected in pairs:
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one per level"):
        build_arch({**spec, "predict_kernel": [3, 5]}, 6)


def test_kpunet_gives_the_signals_after_the_first_kernels_of_their_own_size():
    """``extra_signal_kernel``: the colour a diffuse network filters takes 3x3 kernels at full resolution
    while its light keeps 5x5; 5x5 weights load with the colour's central taps, and where the colour's
    outer ring carried no weight the result is the 5x5 network's."""
    spec = {"type": "kpunet", "widths": [8, 8, 8], "predict_kernel": 5, "signals": 2}
    both = build_arch(spec, 6).eval()
    mixed = build_arch({**spec, "extra_signal_kernel": [3, 5, 5]}, 6).eval()
    assert mixed.heads[0].out_channels == (25 + 1) + (9 + 1) and mixed.heads[1].out_channels == 2 * 26
    assert mixed.heads[2].out_channels == 2 * 25  # the coarsest level has no blend weight
    assert mixed.receptive_radius == both.receptive_radius  # the light's 5x5 kernels reach as far
    grid = torch.arange(25).view(5, 5)
    outer = [int(i) for i in grid.flatten() if i not in grid[1:4, 1:4].flatten()]
    with torch.no_grad():
        both.heads[0].bias[[26 + i for i in outer]] = -1e4  # the colour's outer ring: no weight
    mixed.load_state_dict(both.state_dict())
    features, light, colour = torch.randn(2, 6, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        for got, expected in zip(mixed(features, light, colour), both(features, light, colour), strict=True):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    single = build_arch({**spec, "signals": 1, "extra_signal_kernel": 3}, 6)  # no later signal: no effect
    assert single.heads[0].out_channels == 26
    with pytest.raises(ValueError, match="extra_signal_kernel"):
        build_arch({**spec, "extra_signal_kernel": [3, 5]}, 6)
    with pytest.raises(ValueError, match="extra_signal_kernel"):
        build_arch({**spec, "extra_signal_kernel": 4}, 6)
    with pytest.raises(ValueError, match="must not exceed predict_kernel"):  # the layout rule below
        build_arch({**spec, "predict_kernel": [3, 5, 5], "extra_signal_kernel": 5}, 6)
    # a stored head's layout from its size: equal signals, else the one layout with a smaller later size
    layout = mixed._stored_kernel_sizes
    assert layout(26 + 26, 1) == [5, 5] and layout(26 + 10, 1) == [5, 3] and layout(25 + 9, 0) == [5, 3]
    assert layout(26, 1) == [5]  # a one-signal network's head
    assert layout(82 + 50, 1) is None  # 9x9 + 7x7 or 11x11 + 3x3: refused, not guessed


def test_a_pruned_network_takes_another_kernel_size(tmp_path):
    """A pruned config's ``channels`` give the heads their (pruned) inputs but not their rows, which
    follow ``predict_kernel``: the shipped, pruned ``fast`` with 3x3 kernels at full resolution builds,
    loads the 5x5 weights of its light by their central taps (its colour's are 3x3 already: a head of
    unequal signals), and runs (training/configs/fast_k3_gpu.yaml)."""
    from safetensors.torch import load_file

    from training.checkpoint import load_weights

    config = tmp_path / "fast_k3.yaml"
    config.write_text(f"base: {REPO / 'models' / 'fast.json'}\nmodel: {{predict_kernel: [3, 5, 5, 5, 5]}}\n")
    graph = build_graph(load_config([config])).eval()
    assert load_config_json(REPO / "models" / "fast.json").model["channels"]  # it is a pruned network
    load_weights(REPO / "models" / "fast.safetensors", graph)
    stored = load_file(REPO / "models" / "fast.safetensors")
    grid = torch.arange(25).view(5, 5)
    central = grid[1:4, 1:4].flatten().tolist()
    assert stored["nets.diffuse.heads.0.weight"].shape[0] == (25 + 1) + (9 + 1)  # light 5x5, colour 3x3
    for name, signals in (("diffuse", 2), ("specular", 1)):
        head = getattr(graph.nets, name).heads[0]
        assert head.out_channels == signals * (9 + 1)
        rows = central + [25] + (list(range(26, 36)) if signals == 2 else [])
        assert torch.equal(head.weight.detach(), stored[f"nets.{name}.heads.0.weight"][rows])
        assert getattr(graph.nets, name).heads[1].out_channels == signals * (25 + 1)
    with torch.no_grad():
        outputs = graph(**example_inputs(graph, 32, 32))
    assert all(torch.isfinite(output).all() for output in outputs)


def test_kpunet_attention_blocks_deepen_the_levels_and_start_as_the_identity_from_shallower_weights():
    spec = {"type": "kpunet", "widths": [8, 16, 16], "norm": "batch"}
    shallow = build_arch(spec, 6).eval()
    deep = build_arch({**spec, "attention_blocks": [0, 1, 2]}, 6).eval()
    assert sum(isinstance(m, RCAB) for m in deep.modules()) == 3
    assert deep.receptive_radius > shallow.receptive_radius
    features, color = torch.randn(2, 6, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(deep(features, color), shallow(features, color))
        deep.load_state_dict(shallow.state_dict())  # the blocks shallow lacks are added as the identity
        torch.testing.assert_close(deep(features, color), shallow(features, color), atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="Missing key"):  # only whole kpunet weights are completed
        partial = {k: v for k, v in shallow.state_dict().items() if not k.startswith("encoders.0")}
        deep.load_state_dict(partial)


def test_kpunet_loads_narrower_weights_into_wider_levels_and_starts_as_the_narrow_network():
    """quality_wide.yaml: full-resolution channels 16 -> 32 from trained weights. The added channels are
    computed (random weights, batch norm) but every convolution reading them has zero weights there."""
    spec = {"type": "kpunet", "widths": [8, 8, 16], "norm": "batch", "attention_blocks": [0, 1, 1]}
    narrow = build_arch(spec, 6)
    with torch.no_grad():  # trained-looking batch-norm statistics, so that eval mode is not the identity
        for module in narrow.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    narrow.eval()
    wide = build_arch({**spec, "widths": [16, 12, 16]}, 6).eval()
    features, color = torch.randn(2, 6, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(wide(features, color), narrow(features, color))
        wide.load_state_dict(narrow.state_dict())
        torch.testing.assert_close(wide(features, color), narrow(features, color))
        assert wide.encoders[0][0][0].weight.shape[0] == 16  # the wider shapes are kept
    with pytest.raises(RuntimeError, match="size mismatch"):  # a wider stored tensor is not cropped
        narrow.load_state_dict(wide.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):  # input features are the graph's layout
        build_arch({**spec, "widths": [16, 12, 16]}, 7).load_state_dict(narrow.state_dict())
