"""timm's model contract on every ghostnest family, checked by our own tests (small networks, small inputs).

timm's own tests/test_models.py runs on the full models through benchmarks/timm_model_suite.py (docs/timm.md);
these check the same promises within the suite's time budget: the pretrained cfg and the preprocessing timm's tools
resolve from it, feature extraction (``features_only`` equals ``forward_intermediates``, channels and reductions
equal ``feature_info``), pruning, gradient checkpointing, the classifier interface, layer-decay groups, torch.fx
and TorchScript, and the one-line errors for options a family does not take.
"""
import copy

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.models import FeatureInfo

import ghostnest
from ghostnest.models._base import UnknownOptionError
from ghostnest.normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

OURS = [n for n in ghostnest.list_models() if ghostnest.model_info(n).source == "ghostnest"]
TINY_MENEST = dict(stages=(("ms", 1, 8, 1, 1), ("ms", 1, 16, 2, 2), ("ms_ghost", 1, 16, 2, 2),
                           ("ms_ghost", 1, 24, 1, 2), ("ms_ghost", 1, 32, 2, 2)), stem_width=8, num_features=48)
TINY_GHOSTMIXNET = dict(depths=(1, 2, 1), widths=(8, 16, 16), stem_width=8)
TINY_TSA = dict(TINY_MENEST, head_dim=8, window=4)  # self-attention in the two MS stages, 4x4 windows
TINY_RESNET = dict(stages=(("ms", 1, 8, 1, 1), ("ms", 1, 16, 2, 2), ("ms_ghost", 1, 16, 2, 2),
                           ("ms_ghost", 1, 24, 2, 2)), stem_width=8, num_features=48)
TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
TINY_COATNET = dict(img_size=32, embed_dim=(16, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=(8, 16))
# (model name, small options, input size): every family, small enough for the suite
SMALL = [("menest_ghost_s", TINY_MENEST, 32), ("ghostmixnet", TINY_GHOSTMIXNET, 32),
         ("ghostmixnet_resnet", TINY_GHOSTMIXNET, 32), ("menest_ghost_tsa_s", TINY_TSA, 32),
         ("menest_ghost_resnet_s", TINY_RESNET, 32), ("convnext_nano", TINY_CONVNEXT, 32),
         ("coatnet_nano_rw_224", TINY_COATNET, 32)]
IDS = [s[0] for s in SMALL]


def _ours(name):
    return ghostnest.model_info(name).source == "ghostnest"


def _small(name, kwargs, **extra):
    torch.manual_seed(0)
    return ghostnest.create_model(name, **kwargs, **extra)


@pytest.mark.parametrize("name", OURS)
def test_pretrained_cfg_is_what_the_recipes_train_with(name):
    with torch.device("meta"):
        model = ghostnest.create_model(name).eval()
    cfg, info = model.pretrained_cfg, ghostnest.model_info(name)
    menest = info.family.startswith("menest")  # ME-NeSt-Ghost and its future-work variants (TSA, ResNet-style)
    assert cfg["architecture"] == name and cfg["num_classes"] == info.num_classes == model.num_classes
    assert cfg["input_size"] == (3, info.input_size, info.input_size) == ((3, 128, 128) if menest else (3, 32, 32))
    assert cfg["min_input_size"] == (3, model.min_input_size, model.min_input_size) == (3, 32, 32)
    assert (cfg["mean"], cfg["std"]) == ((CIFAR100_MEAN, CIFAR100_STD) if menest else (CIFAR10_MEAN, CIFAR10_STD))
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic" and cfg["license"] == "mit"
    assert cfg["paper_name"].startswith("Mixconv-EfficientNeSt-Ghost" if menest else "GhostMixNet")
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    data = resolve_data_config({}, model=model)  # what timm's train.py / validate.py / transforms read
    assert data["input_size"] == cfg["input_size"] and data["mean"] == cfg["mean"] and data["crop_pct"] == 1.0
    features = model.forward_features(torch.zeros(1, *cfg["input_size"], device="meta"))
    assert tuple(features.shape[-2:]) == cfg["pool_size"]
    assert timm.models.get_pretrained_cfg(name).input_size == cfg["input_size"]  # registered by timm's register_model


BASELINES = ["efficientnetv2_s", "convnext_nano", "coatnet_nano_rw_224"]  # timm's own, one per family


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_get_the_recipe_preprocessing_too(name):
    with torch.device("meta"):
        model = ghostnest.create_model(name)
    data = resolve_data_config({}, model=model)
    assert model.num_classes == 100 and data["input_size"] == (3, 128, 128) and data["mean"] == CIFAR100_MEAN
    assert data["crop_pct"] == 1.0 and model.pretrained_cfg["pool_size"] == (4, 4)


@pytest.mark.parametrize("name", [*OURS, *BASELINES])
def test_num_classes_zero_is_a_headless_feature_model(name):
    with torch.device("meta"):
        model = ghostnest.create_model(name, num_classes=0).eval()
        out = model(torch.zeros(2, 3, *(ghostnest.registry.fixed_input_size(model) or (64, 64))))
    assert model.num_classes == 0 and tuple(out.shape) == (2, model.head_hidden_size)
    assert not any(p.shape[0] == 0 for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_features_only_equals_forward_intermediates_and_feature_info(name, kwargs, size):
    model = _small(name, kwargs).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        info = FeatureInfo(model.feature_info, len(model.feature_info))
        assert [t.shape[1] for t in taps] == info.channels()
        assert [size // t.shape[-1] for t in taps] == info.reduction()
        for feature_cls in ("list", "dict", "hook", "getter"):
            extractor = _small(name, kwargs, features_only=True, feature_cls=feature_cls).eval()
            out = extractor(x)
            out = list(out.values()) if isinstance(out, dict) else out
            assert extractor.feature_info.channels() == info.channels(), feature_cls
            assert len(out) == len(taps)
            for a, b in zip(out, taps, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        # ours list the levels in the model's order whatever order out_indices gives them in (build_model sorts);
        # timm's own wrappers return them in that order but list feature_info in the order given: ask in order
        some = _small(name, kwargs, features_only=True, out_indices=(-1, 1) if _ours(name) else (1, -1)).eval()
        assert some.feature_info.channels() == info.channels([1, len(taps) - 1])
        for a, b in zip(some(x), [taps[1], taps[-1]], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        last2 = model.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
        for a, b in zip(last2, taps[-2:], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_pruning_keeps_the_outputs_up_to_the_kept_level(name, kwargs, size):
    model = _small(name, kwargs).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, taps = model(x), model.forward_intermediates(x, intermediates_only=True)
        kept = copy.deepcopy(model)
        kept.prune_intermediate_layers(len(taps) - 1, prune_head=False)  # the last level, head kept: no change
        torch.testing.assert_close(kept(x), expected, rtol=0, atol=0)
        for i in range(len(taps)):
            pruned = copy.deepcopy(model)
            take = pruned.prune_intermediate_layers([i], prune_norm=True)
            assert take == [i] and pruned.num_classes == 0
            torch.testing.assert_close(pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0],
                                       taps[i], rtol=0, atol=0)
            torch.testing.assert_close(pruned.forward_features(x), taps[i], rtol=0, atol=0)
            assert pruned.head_hidden_size == pruned.num_features == taps[i].shape[1]
    pruned.train()
    sum(f.sum() for f in pruned.forward_intermediates(x, indices=take, intermediates_only=True)).backward()
    assert not [n for n, p in pruned.named_parameters() if p.grad is None]  # nothing unused left (DDP)


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_grad_checkpointing_gives_the_same_gradients(name, kwargs, size):
    x = torch.randn(4, 3, size, size)
    grads, outs = [], []
    for enable in (False, True):
        model = _small(name, {**kwargs, "drop_rate": 0.0}).train()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)  # the same stochastic depth / dropout draws (checkpointing replays the RNG)
        out = model(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0])
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


def test_grad_checkpointing_recomputes_in_backward():
    """Checkpointed, a block's forward runs again in backward: its activations were not kept."""
    name, kwargs, size = SMALL[1]
    calls = []
    for enable in (False, True):
        model = _small(name, kwargs).train()
        model.set_grad_checkpointing(enable)
        block, count = model.stages[1][0], [0]

        def counted(x, forward=block.forward, count=count):
            count[0] += 1
            return forward(x)

        block.forward = counted
        model(torch.randn(2, 3, size, size)).sum().backward()
        calls.append(count[0])
    assert calls == [1, 2]


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_classifier_interface(name, kwargs, size):
    model = _small(name, kwargs).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, model.head_hidden_size)
        model.reset_classifier(5)  # keeps the pooling
        assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
        model.reset_classifier(0, "")
        assert model(x).shape == model.forward_features(x).shape  # unpooled
        model.reset_classifier(3, "max")
        assert model(x).shape == (2, 3) and model.head_hidden_size == pooled.shape[1]
        if not _ours(name):  # timm's norm + MLP heads (ConvNeXt, CoAtNet) take no pooling that widens the features
            return
        model.reset_classifier(3, "catavgmax")
        assert model(x).shape == (2, 3) and model.head_hidden_size == 2 * pooled.shape[1]
    with pytest.raises(ValueError, match="global_pool='bogus' is not valid"):
        model.reset_classifier(3, "bogus")


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_group_matcher_feeds_timms_layer_decay(name, kwargs, size):
    from timm.optim import create_optimizer_v2

    model = _small(name, kwargs)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.7)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert len(scales) > 2 and max(scales) == 1.0  # the classifier at full rate, earlier layers decayed
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("name,kwargs,size", SMALL, ids=IDS)
def test_fx_and_torchscript_follow_forward(name, kwargs, size):
    from timm.models import create_feature_extractor, get_graph_node_names

    model = _small(name, kwargs).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-6)
        nodes = get_graph_node_names(model)[1]
        fx = create_feature_extractor(model, [nodes[-1]])
        torch.testing.assert_close(fx(x)[nodes[-1]], expected, rtol=1e-5, atol=1e-6)


def test_every_factory_keyword_of_timm_works():
    name, kwargs, size = SMALL[0]
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs, num_classes=7, in_chans=1, global_pool="max",
                                  pretrained_cfg_overlay=dict(mean=(0.5,), std=(0.25,)))
    assert model.num_classes == 7 and model.stem[0].in_channels == 1 and model.global_pool.pool_type == "max"
    assert model.pretrained_cfg["mean"] == (0.5,)
    model = timm.create_model(name, **kwargs, device="meta", dtype=torch.bfloat16)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("kwargs,match", [
    (dict(features_only=True, out_indices=(0, 7)), r"out_indices=\(0, 7\): ME-NeSt-Ghost has 5 feature levels; use "
                                                   r"indices 0 to 4"),
    (dict(features_only=True, out_indices=9), "pass 1 to 5"),
    (dict(features_only=True, feature_cls="pyramid"), "feature_cls='pyramid' is not one of timm's feature wrappers"),
    (dict(out_indices=(1, 2)), r"\['out_indices'\] apply to a feature extractor: pass features_only=True"),
    (dict(features_only=True, output_stride=8), r"unknown ME-NeSt-Ghost option\(s\) \['output_stride'\]"),
    (dict(global_pool="median"), "global_pool='median' is not valid"),
])
def test_bad_feature_options_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        with torch.device("meta"):
            ghostnest.create_model("menest_ghost_s", **kwargs)
    assert "\n" not in str(err.value)


def test_an_unknown_option_is_a_type_error_as_timm_expects():
    with pytest.raises(TypeError, match="unknown GhostMixNet option"):
        timm.create_model("ghostmixnet", not_a_model_arg=1)
    assert issubclass(UnknownOptionError, ValueError)  # and a one-line error on the command line
