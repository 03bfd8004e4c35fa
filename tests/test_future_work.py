"""The ME-NeSt-Ghost paper's future work (section 6): ConvNeXt/CoAtNet baselines (timm), ME-NeSt-Ghost-TSA
(self-attention for Split-Attention), ResNet-style ME-NeSt-Ghost; their layer, counts, training, fusion and export.

Full-size models are built on the ``meta`` device; real passes use small inputs or tiny stage tables.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

import ghostnest
from ghostnest.layers.self_attention import SelfAttention2d
from ghostnest.models.menest import MSBlock
from ghostnest.models.menest_resnet import STAGES_RESNET_M, STAGES_RESNET_S
from ghostnest.stats import count_params
from helpers import calibrate_bn

# 100 classes, the documented figures (docs/architecture.md, "The ME-NeSt-Ghost paper's future work")
COUNTS = {
    "menest_ghost_tsa_s": 18_945_960, "menest_ghost_tsa_m": 48_216_969,
    "menest_ghost_resnet_s": 19_826_091, "menest_ghost_resnet_m": 48_834_949,
    "convnext_nano": 15_016_660, "convnext_tiny": 27_897_028, "convnext_small": 49_531_588,
    "coatnet_nano_rw_224": 14_652_568, "coatnet_0_rw_224": 26_699_830, "coatnet_1_rw_224": 40_943_434,
    "coatnet_2_rw_224": 72_831_276,
}
MENEST = {"s": 19_446_586, "m": 49_052_847}
TINY_TSA = dict(stages=(("ms", 1, 8, 1, 1), ("ms", 2, 16, 2, 4), ("ms_ghost", 1, 16, 2, 4)), stem_width=8,
                num_features=32, head_dim=16, window=4, num_classes=5)
TINY_RESNET = dict(stages=(("ms", 1, 8, 1, 1), ("ms", 1, 16, 2, 4), ("ms_ghost", 1, 16, 2, 4),
                           ("ms_ghost", 1, 24, 2, 6)), stem_width=8, num_features=32, num_classes=5)
TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=5)
TINY_COATNET = dict(img_size=32, embed_dim=(16, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=(8, 16), num_classes=5)


def trained_scale(model: nn.Module) -> nn.Module:
    """Self-attention weights of a trained layer's size: a fresh layer's (ViT initialisation, std 0.02) add almost
    nothing to its input, so a parity check through them could pass with the attention computed wrongly."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                for conv in (m.qkv, m.proj):
                    if isinstance(conv, nn.Conv2d):
                        conv.weight.normal_(0, conv.in_channels ** -0.5, generator=gen)
                if m.rel_pos is not None:
                    m.rel_pos.relative_position_bias_table.normal_(generator=gen)
    return model


def build(name: str, kw: dict) -> nn.Module:
    """The model, with its self-attention at a trained layer's scale and its BN statistics calibrated at 32x32."""
    torch.manual_seed(0)
    return calibrate_bn(trained_scale(ghostnest.create_model(name, **kw)), 32)


def meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return ghostnest.create_model(name, **{"num_classes": 100, **kw})  # timm's models default to 1000


# --- counts and registration --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", COUNTS)
def test_counts_are_the_documented_ones(name):
    assert count_params(meta(name)) == COUNTS[name]


@pytest.mark.parametrize("size", ["s", "m"])
def test_tsa_and_resnet_style_are_within_5_percent_of_menest(size):
    for family in ("tsa", "resnet"):
        n = COUNTS[f"menest_ghost_{family}_{size}"]
        assert abs(n / MENEST[size] - 1) < 0.05, f"{family}_{size}: {n:,} vs {MENEST[size]:,}"
    assert count_params(meta(f"menest_ghost_{size}")) == MENEST[size]


def test_baselines_bracket_menest_s_and_m():
    c = COUNTS
    assert c["convnext_nano"] < MENEST["s"] < c["convnext_tiny"] < MENEST["m"] < c["convnext_small"]
    assert c["coatnet_nano_rw_224"] < MENEST["s"] < c["coatnet_0_rw_224"]
    assert c["coatnet_1_rw_224"] < MENEST["m"] < c["coatnet_2_rw_224"]


def test_baselines_are_timms_and_ours_are_in_timms_registry():
    for name in ("convnext_nano", "coatnet_0_rw_224"):
        assert type(meta(name)).__module__.startswith("timm.")
        assert ghostnest.model_info(name).source == "timm"
    for name in ("menest_ghost_tsa_s", "menest_ghost_resnet_m"):
        assert name in timm.list_models(name)
        with torch.device("meta"):
            assert count_params(timm.create_model(name, num_classes=100)) == COUNTS[name]
    assert set(ghostnest.list_models(family="coatnet")) == {n for n in COUNTS if n.startswith("coatnet")}
    for name in ("convnext_nano", "coatnet_nano_rw_224"):  # timm's feature extraction, at our input size
        feats = meta(name, features_only=True, num_classes=0)(torch.zeros(1, 3, 128, 128, device="meta"))
        assert [f.shape[-1] for f in feats][-1] == 4  # output stride 32


def test_coatnet_input_size_is_fixed_and_says_so():
    assert tuple(meta("coatnet_nano_rw_224").img_size) == (128, 128)  # default: the registry's input size
    big = meta("coatnet_nano_rw_224", img_size=256)
    assert tuple(big.img_size) == (256, 256)
    assert big.pretrained_cfg["input_size"] == (3, 256, 256) and big.pretrained_cfg["pool_size"] == (8, 8)
    torch.manual_seed(0)
    model = ghostnest.create_model("coatnet_nano_rw_224", **TINY_COATNET).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    model.check_input((2, 3, 32, 32))  # the contract's input check (training, export, bench), not in forward
    with pytest.raises(ValueError, match="built for 32x32 inputs .* got 64x64; build it with img_size=64"):
        model.check_input((1, 3, 64, 64))
    with pytest.raises(ValueError, match="cannot export at input size 64: coatnet_nano_rw_224 was built for 32x32"):
        from ghostnest.export import export_model

        export_model(model, "onnx", "unused.onnx", 64, {"model": "coatnet_nano_rw_224"})
    assert not ghostnest.registry.fixed_input_size(meta("convnext_nano"))  # ConvNeXt takes any size


def test_bench_builds_a_coatnet_for_the_input_it_times():
    from ghostnest.bench import bench_models

    kwargs = {k: v for k, v in TINY_COATNET.items() if k not in ("img_size", "num_classes")}
    row, = bench_models(["coatnet_nano_rw_224"], input_size=64, batch=1, repeats=1, warmup=1, device="cpu",
                        num_classes=5, model_kwargs=kwargs)  # built with img_size=64, as a recipe would be
    at_32 = ghostnest.create_model("coatnet_nano_rw_224", **TINY_COATNET)
    assert row["input_size"] == 64 and row["params"] > count_params(at_32)  # the larger relative-position tables


# --- the self-attention layer -------------------------------------------------------------------------------------

def naive_attention(m: SelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Window by window with explicit softmax and the bias read off the table by offset (no shared code)."""
    n, c, h, w = x.shape
    q, k, v = m.qkv(x).view(n, 3, m.num_heads, m.head_dim, h, w).unbind(1)
    side, t = m.window or max(h, w), m.window
    out = torch.zeros(n, m.num_heads, m.head_dim, h, w)
    for y0 in range(0, h, side):
        for x0 in range(0, w, side):
            pos = [(a, b) for a in range(y0, min(y0 + side, h)) for b in range(x0, min(x0 + side, w))]
            qs, ks, vs = (torch.stack([z[..., a, b] for a, b in pos], 2) for z in (q, k, v))
            logits = qs @ ks.transpose(-1, -2) / math.sqrt(m.head_dim)
            if m.rel_pos is not None:
                table = m.rel_pos.relative_position_bias_table.view(2 * t - 1, 2 * t - 1, -1)
                bias = torch.stack([torch.stack([table[a - a2 + t - 1, b - b2 + t - 1] for a2, b2 in pos])
                                    for a, b in pos])
                logits = logits + bias.permute(2, 0, 1)
            o = logits.softmax(-1) @ vs
            for i, (a, b) in enumerate(pos):
                out[..., a, b] = o[:, :, i]
    return m.proj(out.reshape(n, c, h, w))


@pytest.mark.parametrize("window,rel_pos,h,w", [(4, True, 8, 8), (4, True, 3, 2), (4, True, 6, 7), (0, False, 5, 6),
                                                (4, False, 6, 9)])
def test_self_attention_equals_the_naive_computation(window, rel_pos, h, w):
    """Windows that tile the map, a map smaller than the window (the table's centre), a padded map (masked keys),
    global attention."""
    m = trained_scale(SelfAttention2d(32, 16, window, rel_pos))
    x = torch.randn(2, 32, h, w)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_attention(m, x), atol=1e-5, rtol=1e-5)


def test_self_attention_residual_adds_its_input():
    plain = trained_scale(SelfAttention2d(32, 16, 4))
    res = SelfAttention2d(32, 16, 4, residual=True)
    res.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(res(x), x + plain(x))


def test_self_attention_starts_near_the_identity_in_its_block():
    """ViT's initialisation: a fresh residual attention changes its input by little (He initialisation, the
    convolutions', added a window average of the input's own size)."""
    torch.manual_seed(0)
    m = SelfAttention2d(64, 32, 8, residual=True)
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        assert (m(x) - x).std() < 0.01 * x.std()
    assert float(m.qkv.weight.std()) == pytest.approx(0.02, rel=0.1)


def test_self_attention_parameters_and_errors():
    m = SelfAttention2d(64, 32, 8, rel_pos=True)
    assert (m.num_heads, m.head_dim) == (2, 32)
    assert count_params(m) == 64 * 192 + 192 + 64 * 64 + 64 + 15 * 15 * 2  # qkv, projection, bias table
    assert count_params(SelfAttention2d(64, 32, 8, rel_pos=False, proj=False)) == 64 * 192 + 192
    assert SelfAttention2d(24, 32).num_heads == 1  # narrower than one head: one head of 24
    with pytest.raises(ValueError, match="rel_pos=True needs windowed attention"):
        SelfAttention2d(64, 32, 0, rel_pos=True)
    with pytest.raises(ValueError, match="cannot be split into 3 heads"):
        SelfAttention2d(100, 32)
    with pytest.raises(ValueError, match="expects 64 input channels, got 32"):
        m(torch.randn(1, 32, 8, 8))


# --- ME-NeSt-Ghost-TSA and ResNet-style ME-NeSt-Ghost -------------------------------------------------------------

def test_tsa_replaces_every_split_attention_unit():
    model = meta("menest_ghost_tsa_s")
    blocks = [b for stage in model.stages for b in stage if isinstance(b, MSBlock)]
    assert len(blocks) == 10  # Table 1's MS blocks, all of them
    assert not any(type(m).__name__ == "SplitAttention" for m in model.modules())
    for b in blocks:
        assert b.mixconv.multiplier == b.mixconv.out_channels // b.mixconv.in_channels  # one branch: radix 1
        # after the projection where the block has one (at the stage width), else in the unit's place
        attn = b.proj[-1] if isinstance(b.proj, nn.Sequential) else b.attn
        assert isinstance(attn, SelfAttention2d) and attn.window == 8 and attn.rel_pos is not None and attn.residual
        width = b.proj[0].out_channels if isinstance(b.proj, nn.Sequential) else b.mixconv.out_channels
        assert attn.channels == width
    assert [a.channels for a in model.modules() if isinstance(a, SelfAttention2d)] == [24] * 2 + [48] * 4 + [64] * 4


def test_tsa_options_place_the_attention():
    last = meta("menest_ghost_tsa_s", attn_stages=(2,), global_stages=(2,))
    kinds = [type(m).__name__ for stage in last.stages[:3] for b in stage for m in b.modules()]
    assert kinds.count("SplitAttention") == 6 and kinds.count("SelfAttention2d") == 4
    assert all(b.proj[-1].window == 0 and b.proj[-1].rel_pos is None for b in last.stages[2])
    inplace = meta("menest_ghost_tsa_s", attn_at="expanded")
    block = inplace.stages[1][1]  # 48 -> 48 channels, expansion 4: attention at 192 channels, no projection of its own
    assert block.attn.channels == 192 and isinstance(block.attn.proj, nn.Identity)
    assert isinstance(inplace.stages[0][0].attn.proj, nn.Conv2d)  # a block without projection keeps the attention's
    with pytest.raises(ValueError, match=r"\[4\] are not MS stages"):
        meta("menest_ghost_tsa_s", attn_stages=(4,))
    with pytest.raises(ValueError, match="attn_at='x' must be"):
        meta("menest_ghost_tsa_s", attn_at="x")
    with pytest.raises(ValueError, match="unknown ME-NeSt-Ghost-TSA option"):
        meta("menest_ghost_tsa_s", windows=4)


@pytest.mark.parametrize("size,stages,depths", [("s", STAGES_RESNET_S, (3, 4, 6, 3)),
                                                ("m", STAGES_RESNET_M, (3, 8, 36, 3))])
def test_resnet_style_layout(size, stages, depths):
    model = meta(f"menest_ghost_resnet_{size}")
    assert tuple(len(s) for s in model.stages) == depths  # ResNet-50 / ResNet-152
    assert [type(s[0]).__name__ for s in model.stages] == ["MSBlock", "MSBlock", "MSGhostBlock", "MSGhostBlock"]
    assert [r[2] for r in stages] == [76, 152, 304, 608] and [r[3] for r in stages] == [1, 2, 2, 2]
    assert isinstance(model.stem[-1], nn.MaxPool2d)
    feats = model.eval().forward_features(torch.zeros(1, 3, 128, 128, device="meta"))
    assert feats.shape == (1, 1792, 4, 4)  # output stride 32


@pytest.mark.parametrize("name", ["menest_ghost_tsa_s", "menest_ghost_tsa_m", "menest_ghost_resnet_s",
                                  "menest_ghost_resnet_m"])
def test_full_size_shapes_at_128_and_256(name):
    """On meta (shapes only): features at output stride 32, 100 logits, at the paper's 128 and the recipe's 256."""
    model = meta(name).eval()
    for size in (128, 256):
        x = torch.zeros(2, 3, size, size, device="meta")
        assert model.forward_features(x).shape == (2, 1792, size // 32, size // 32)
        assert model(x).shape == (2, 100)


def test_tiny_tsa_runs_at_odd_sizes():
    """Maps the 4x4 windows do not divide (padded, masked) and maps smaller than a window."""
    torch.manual_seed(0)
    model = ghostnest.create_model("menest_ghost_tsa_s", **TINY_TSA).eval()
    with torch.no_grad():
        for size in (36, 13):
            y = model(torch.randn(2, 3, size, size + 3))
            assert y.shape == (2, 5) and torch.isfinite(y).all()


@pytest.mark.parametrize("name,kw", [("menest_ghost_tsa_s", TINY_TSA), ("menest_ghost_resnet_s", TINY_RESNET),
                                     ("convnext_nano", TINY_CONVNEXT), ("coatnet_nano_rw_224", TINY_COATNET)])
def test_training_steps_lower_the_loss(name, kw):
    """A few AdamW steps on one fixed batch: every parameter gets a finite gradient and the loss goes down."""
    torch.manual_seed(0)
    model = ghostnest.create_model(name, **kw).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if not losses:
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- fused inference and export -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("menest_ghost_tsa_s", TINY_TSA), ("menest_ghost_resnet_s", TINY_RESNET),
                                     ("convnext_nano", TINY_CONVNEXT), ("coatnet_nano_rw_224", TINY_COATNET)])
def test_fused_equals_unfused(name, kw):
    model = build(name, kw)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), ghostnest.fuse(model)(x)
    assert ref.std() > 1e-2
    torch.testing.assert_close(out, ref, atol=1e-4 * max(1.0, ref.abs().max().item()), rtol=0)


@pytest.mark.parametrize("name,kw,fuse", [("menest_ghost_tsa_s", TINY_TSA, True),
                                          ("menest_ghost_resnet_s", TINY_RESNET, True),
                                          ("convnext_nano", TINY_CONVNEXT, False),
                                          ("coatnet_nano_rw_224", TINY_COATNET, True)])
def test_onnx_export_parity(name, kw, fuse, tmp_path):
    from ghostnest.export import OnnxClassifier, export_model

    model = build(name, kw)
    if fuse:
        model = ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime")
    path = export_model(model, "onnx", tmp_path / "m.onnx", 32, {"model": name})
    runner = OnnxClassifier(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,kw", [("menest_ghost_tsa_s", TINY_TSA), ("menest_ghost_resnet_s", TINY_RESNET),
                                     ("convnext_nano", TINY_CONVNEXT), ("convnext_tiny", TINY_CONVNEXT),
                                     ("coatnet_nano_rw_224", TINY_COATNET)])
def test_int8_export_runs_close_to_fp32(name, kw, tmp_path):
    """The int8 path of `ghostnest export --int8` (fused for onnxruntime, exported, statically quantized)."""
    import onnx

    from ghostnest.export import OnnxClassifier, export_model
    from ghostnest.quantize import quantize_onnx

    model = build(name, kw)
    fused = ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime")
    fp32 = export_model(fused, "onnx", tmp_path / "m.onnx", 32, {"model": name})
    gen = torch.Generator().manual_seed(1)
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", torch.randn(64, 3, 32, 32, generator=gen))
    x = torch.randn(16, 3, 32, 32, generator=gen)
    a, b = OnnxClassifier(fp32)(x), OnnxClassifier(int8)(x)
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.95
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") >= 4
    if name == "menest_ghost_tsa_s":
        assert ops.count("Softmax") == 3  # the three attentions, kept in float
    if name == "convnext_tiny":  # its MLPs are Linear layers (MatMul in ONNX): int8, not kept as the classifier is
        graph = onnx.load(str(int8)).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        assert len(matmuls) == 8 and all(made_by.get(n.input[1]) == "DequantizeLinear" for n in matmuls)


# --- the recipe -------------------------------------------------------------------------------------------------------

def test_recipe_takes_every_new_model():
    from ghostnest.train.config import resolve_config
    from ghostnest.train.model import recipe_model_options

    for name in ("menest_ghost_tsa_m", "menest_ghost_resnet_s", "convnext_small"):
        assert resolve_config("menest-cifar100", [f"model={name}"]).model == name
    cfg = resolve_config("menest-cifar100", ["model=coatnet_0_rw_224", "model_kwargs.img_size=256"])
    assert recipe_model_options(cfg)["num_classes"] == 100


def test_training_a_coatnet_at_another_size_stops_before_writing(tmp_path, capsys):
    from ghostnest.cli import main

    out = tmp_path / "run"
    args = ["train", "--recipe", "quickstart", "--set", "model=coatnet_nano_rw_224", "--set",
            "model_kwargs={embed_dim: [16, 32, 64, 64], depths: [1, 1, 1, 1], stem_width: [8, 16]}",
            "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "built for 128x128 inputs (img_size) but this run trains at 32x32; add --set model_kwargs.img_size=32" in err
    assert not out.exists()


def test_tsa_trains_through_the_cli(tmp_path):
    from ghostnest.cli import main

    out = tmp_path / "run"
    kw = ("{stages: [[ms, 1, 8, 1, 1], [ms, 1, 16, 2, 4], [ms_ghost, 1, 16, 2, 4]], stem_width: 8, "
          "num_features: 32, head_dim: 16, window: 4}")
    assert main(["train", "--recipe", "quickstart", "--set", "model=menest_ghost_tsa_s", "--set",
                 f"model_kwargs={kw}", "--set", "dataset=fake:classes=4,size=16,train=48,test=16", "--set",
                 "batch_size=16", "--set", "val_fraction=0.25", "--set", "epochs=1", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    assert (out / "results.json").is_file()


# --- the report ----------------------------------------------------------------------------------------------------

def test_report_groups_the_future_work_apart_from_table_5(tmp_path, monkeypatch):
    import json

    import ghostnest.report as report
    from ghostnest.report.paper import FUTURE_ROWS

    monkeypatch.setattr(report.render, "_stats",
                        lambda model, num_classes=None: {"params": COUNTS.get(model, MENEST["s"] if model.endswith("_s")
                                                                             else MENEST["m"]),
                                                         "gflops": 1.0, "input_size": 128})
    assert {f.model for f in FUTURE_ROWS} == set(COUNTS)
    run = tmp_path / "tsa"
    run.mkdir()
    (run / "config.yaml").write_text("model: menest_ghost_tsa_s\ndataset: cifar100_128\nnum_classes: 100\n")
    (run / "metrics.csv").write_text("epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds\n1,0.1,3,3,40,70,9\n")
    (run / "results.json").write_text(json.dumps({"model": "menest_ghost_tsa_s", "dataset": "cifar100_128",
                                                  "params": COUNTS["menest_ghost_tsa_s"], "test_top1": 41.5,
                                                  "test_top5": 71.0, "best_epoch": 1, "epochs": 1}))
    report.write_report([run], tmp_path / "out")
    md = (tmp_path / "out" / "table.md").read_text()
    table5, future = md.split("## Future work")
    assert "menest_ghost_tsa_s" not in table5 and "convnext_nano" not in table5
    rows = [line for line in future.splitlines() if line.startswith("| 2:")]
    assert len(rows) == 2 and "41.50%" in rows[0] and "-2.6% of `menest_ghost_s`" in rows[0]
    assert future.count("| 1:") == 7 and future.count("| 3:") == 2
    assert "## Other runs" not in md  # the run is in its group, not among the others
