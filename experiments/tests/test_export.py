"""Python-side checks of the export wrappers and the data reader (run by `just test`)."""
import gzip
import json
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from fd_export import SCHEMA_VERSION, ExportError, export_model
from fd_export import fmnist as fmnist_data
from fd_export.graphs import Decoder, Encoder, TimeEmbed, TimestepProj
from fd_export.testing import TINY_UNET


def tiny_unet(sample_size):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
    ).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet


@pytest.mark.parametrize("size", [16, 14, 15])  # 14 and 15: not multiples of the up factor 4
def test_split_equals_full_forward(size):
    unet = tiny_unet(size)
    x = torch.randn(3, 2, size, size)
    t = torch.tensor([999.0, 500.0, 3.0])
    c = torch.randn(3, 5, 8)
    with torch.no_grad():
        emb = TimeEmbed(unet)(t)
        feats = Encoder(unet)(x, emb, c)
        out = Decoder(unet)(feats[0], emb, c, *feats[1:])
        ref = unet(x, t, encoder_hidden_states=c).sample
    assert (out - ref).abs().max().item() <= 1e-5


def test_traced_graphs_accept_other_batch_sizes(tmp_path):
    unet = tiny_unet(15)
    spec = dict(kind="embedding", seq_len=5, dim=8)
    m = export_model(str(tmp_path), "t", unet, dict(num_train_timesteps=1000), None, spec)
    assert m["graphs"]["encoder"]["flops"] > 0 and m["graphs"]["decoder"]["flops"] > 0
    assert {m["graphs"][k]["file"] for k in ("time_embed", "encoder", "decoder", "full")} == {"unet.pt"}
    split = torch.jit.load(str(tmp_path / "unet.pt"))
    te, enc, dec = split.time_embed, split.encoder, split.decoder
    x, t, c = torch.randn(4, 2, 15, 15), torch.tensor([1.0, 10.0, 100.0, 900.0]), torch.randn(4, 5, 8)
    with torch.no_grad():
        emb = te(t)
        feats = enc(x, emb, c)
        out = dec(feats[0], emb, c, *feats[1:])
        ref = unet(x, t, encoder_hidden_states=c).sample
    assert (out - ref).abs().max().item() <= 1e-5
    assert len(m["skip_shapes"]) == len(feats) - 1


@pytest.mark.parametrize("channels,flip,shift", [(32, True, 0), (320, True, 0), (32, False, 1), (33, True, 1)])
def test_timestep_proj_is_bitwise_diffusers(channels, flip, shift):
    from diffusers.models.embeddings import Timesteps

    ref = Timesteps(channels, flip, shift)
    t = torch.tensor([0.0, 1.0, 21.0, 500.0, 999.0, 981.5])
    assert torch.equal(TimestepProj(ref)(t), ref(t))


def test_graphs_bake_in_no_device(tmp_path):
    """Traced diffusers code records `device=timesteps.device` as the export device; a graph with a
    baked `torch.device(...)` fails on any other device (seen on an H100: "cuda:0 and cpu")."""
    unet = tiny_unet(16)
    export_model(str(tmp_path), "t", unet, dict(num_train_timesteps=1000), None, dict(kind="embedding", seq_len=5, dim=8))
    for pt in tmp_path.glob("*.pt"):
        with zipfile.ZipFile(pt) as z:
            for name in z.namelist():
                if "/code/" in name and name.endswith(".py"):
                    code = z.read(name).decode()
                    assert "torch.device(" not in code, f"{pt.name}:{name} bakes in a device"


def test_attention_flops_are_counted_on_cpu(tmp_path):
    """torch's counter has no CPU formula for SDPA (it counted 0); export_unet supplies torch's own
    formula, and recount_flops.py, counting the saved TorchScript graphs, agrees with the export."""
    import torch.nn.functional as F

    from fd_export import count_flops
    from fd_export.flops import recount

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k = torch.randn(2, 4, 64, 8), torch.randn(2, 4, 16, 8)
    assert count_flops(Attn(), [q, k, k]) == 2 * (2 * 2 * 4 * 64 * 16 * 8)  # QK^T and AV, 2 x MACs
    unet = tiny_unet(16)
    export_model(str(tmp_path), "t", unet, dict(num_train_timesteps=1000), None, dict(kind="embedding", seq_len=5, dim=8))
    counts = recount(str(tmp_path))
    assert counts and all(old == new for old, new in counts.values()), counts
    # the tiny UNet has self-attention at 16x16 (256 tokens): leaving SDPA out would lose these
    enc = Encoder(unet)
    x, t, c = torch.randn(1, 2, 16, 16), torch.tensor([500.0]), torch.randn(1, 5, 8)
    emb = TimeEmbed(unet)(t)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        enc(x, emb, c)
    assert counts["encoder"][1] > fc.get_total_flops()


def test_idx_reader_rejects_truncated_and_wrong_magic(tmp_path):
    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 8, 3, 2, 2, 2) + bytes(7))  # 7 of 8 bytes
    with pytest.raises(ValueError, match="expected 8 data bytes"):
        fmnist_data.read_idx(str(p))
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + bytes(8))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        fmnist_data.read_idx(str(p))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fmnist_data.read_idx(str(tmp_path / "missing.gz"))


def test_fashion_mnist_loads():
    x, y = fmnist_data.load("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert sorted(np.bincount(y).tolist()) == [1000] * 10


def deepcache_reference(unet, branch, x_full, t_full, x, t, c):
    """diffusers forward at (x, t) with the input of up block U[n-1-b] replaced by its value at
    the full step (x_full, t_full): DeepCache's cached step, computed by diffusers itself."""
    target = unet.up_blocks[len(unet.up_blocks) - 1 - branch]
    cache = {}
    h = target.register_forward_pre_hook(lambda m, a, kw: cache.__setitem__("h", kw["hidden_states"]), with_kwargs=True)
    unet(x_full, t_full, encoder_hidden_states=c)
    h.remove()

    def substitute(m, a, kw):
        kw = dict(kw)
        kw["hidden_states"] = cache["h"]
        return a, kw

    h = target.register_forward_pre_hook(substitute, with_kwargs=True)
    out = unet(x, t, encoder_hidden_states=c).sample
    h.remove()
    return out, cache["h"]


@pytest.mark.parametrize("size,branch", [(16, 0), (16, 1), (15, 0), (15, 1)])
def test_deepcache_split_matches_hooked_diffusers(size, branch):
    from fd_export.methods.deepcache import DeepDecoder, ShallowDecoder, ShallowEncoder

    unet = tiny_unet(size)
    x0, x1 = torch.randn(2, 2, 2, size, size)
    t0, t1 = torch.tensor([900.0, 880.0]), torch.tensor([850.0, 800.0])
    c = torch.randn(2, 5, 8)
    te, enc = TimeEmbed(unet), Encoder(unet)
    se, dd, sd = ShallowEncoder(unet, branch), DeepDecoder(unet, branch), ShallowDecoder(unet, branch)
    with torch.no_grad():
        emb0 = te(t0)
        feats = enc(x0, emb0, c)
        h = dd(feats[0], emb0, c, *feats[1:])
        full = sd(h, emb0, c, *se(x0, emb0, c))
        assert (full - unet(x0, t0, encoder_hidden_states=c).sample).abs().max().item() <= 1e-5
        emb1 = te(t1)
        cached = sd(h, emb1, c, *se(x1, emb1, c))
        ref, h_ref = deepcache_reference(unet, branch, x0, t0, x1, t1, c)
    assert (h - h_ref).abs().max().item() <= 1e-5
    assert (cached - ref).abs().max().item() <= 1e-5
    # the shallow encoder stops early: it does not compute the deepest skips
    assert len(se(x1, emb1, c)) < len(feats) - 1


def test_analysis_decoder_returns_up_block_outputs():
    from fd_export.graphs import AnalysisDecoder

    unet = tiny_unet(15)
    x, t, c = torch.randn(2, 2, 15, 15), torch.tensor([10.0, 500.0]), torch.randn(2, 5, 8)
    captured = []
    hooks = [b.register_forward_hook(lambda m, a, o: captured.append(o)) for b in unet.up_blocks]
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=c).sample
        emb = TimeEmbed(unet)(t)
        feats = Encoder(unet)(x, emb, c)
        out = AnalysisDecoder(unet)(feats[0], emb, c, *feats[1:])
    for h in hooks:
        h.remove()
    assert (out[0] - ref).abs().max().item() <= 1e-5
    assert len(out) == 1 + len(unet.up_blocks)
    for got, want in zip(out[1:], captured):
        assert (got - want).abs().max().item() <= 1e-5


def test_manifest_schema_version_is_the_one_fd_model_reads():
    """The schema version lives in fd_export.schema and in crates/fd-model/src/manifest/mod.rs: one number."""
    rs = (Path(__file__).resolve().parents[2] / "crates/fd-model/src/manifest/mod.rs").read_text()
    m = re.search(r"pub const SCHEMA_VERSION: u32 = (\d+);", rs)
    assert m, "SCHEMA_VERSION not found in manifest/mod.rs"
    assert int(m.group(1)) == SCHEMA_VERSION


def test_export_is_frozen_bit_identical_and_keeps_its_weights(tmp_path):
    """Graphs are saved frozen (no state dict, weights as constants): the same bits as the traced
    graph before freezing; with save_weights the diffusers state dict sits beside them, and
    freeze_export converts an unfrozen export in place with the same result."""
    from safetensors.torch import load_file

    from fd_export.folder import freeze_export

    unet = tiny_unet(16)
    spec = dict(kind="embedding", seq_len=5, dim=8)
    m = export_model(str(tmp_path / "a"), "t", unet, dict(num_train_timesteps=1000), None, spec, save_weights=True)
    assert m["exporter"]["frozen"] is True and m["exporter"]["weights"]["file"] == "unet_weights.safetensors"
    split = torch.jit.load(str(tmp_path / "a" / "unet.pt"))
    assert len(split.state_dict()) == 0
    w = load_file(str(tmp_path / "a" / "unet_weights.safetensors"))
    assert w.keys() == unet.state_dict().keys()
    assert all(torch.equal(w[k], v) for k, v in unet.state_dict().items())
    x, t, c = torch.randn(3, 2, 16, 16), torch.tensor([1.0, 500.0, 999.0]), torch.randn(3, 5, 8)
    with torch.no_grad():
        emb = TimeEmbed(unet)(t)
        feats = Encoder(unet)(x, emb, c)
        ref = Decoder(unet)(feats[0], emb, c, *feats[1:])
        femb = split.time_embed(t)
        ffeats = split.encoder(x, femb, c)
        out = split.decoder(ffeats[0], femb, c, *ffeats[1:])
    assert (out - ref).abs().max().item() <= 1e-5
    # an unfrozen export (as before 2026-12-01), frozen in place: same bits, new hashes, weights kept
    import fd_export.tracing as ex

    def plain_save(traced, methods, path):
        traced.save(path)

    b = tmp_path / "b"
    orig = ex.freeze_and_save
    ex.freeze_and_save = plain_save
    try:
        old = export_model(str(b), "t", unet, dict(num_train_timesteps=1000), None, spec)
    finally:
        ex.freeze_and_save = orig
    unfrozen = torch.jit.load(str(b / "unet.pt"))
    assert len(unfrozen.state_dict()) > 0
    assert sorted(freeze_export(str(b), save_weights=True)) == ["unet.pt"]
    assert freeze_export(str(b)) == []  # idempotent
    new = json.loads((b / "manifest.json").read_text())
    assert new["graphs"]["decoder"]["sha256"] != old["graphs"]["decoder"]["sha256"] and new["exporter"]["frozen"]
    wb = load_file(str(b / "unet_weights.safetensors"))
    assert all(torch.equal(wb[k], w[k]) for k in wb) and len(wb) > 0
    fz = torch.jit.load(str(b / "unet.pt"))
    with torch.no_grad():
        e1 = unfrozen.encoder(x, femb, c)
        e2 = fz.encoder(x, femb, c)
        assert all(torch.equal(p, q) for p, q in zip(e1, e2))
        assert torch.equal(unfrozen.decoder(e1[0], femb, c, *e1[1:]), fz.decoder(e2[0], femb, c, *e2[1:]))


@pytest.mark.parametrize("field,value,words", [
    ("time_cond_proj_dim", 256, "guidance-embedding"),
    ("class_embed_type", "timestep", "class embeddings"),
    ("addition_embed_type", "image", "image embeds"),
    ("encoder_hid_dim_type", "image_proj", "image-conditioned"),
    ("out_channels", 5, "differs from `in_channels`"),
    ("center_input_sample", True, "centring"),
])
def test_unsupported_unet_forms_are_refused_naming_the_field(field, value, words):
    from fd_export.forms import UnsupportedConfig, unet_form

    cfg = dict(TINY_UNET, **{field: value})
    if field == "encoder_hid_dim_type":
        cfg["encoder_hid_dim"] = 16
    with pytest.raises(UnsupportedConfig) as e:
        unet_form(cfg)
    assert f"`{field}`" in str(e.value) and words in str(e.value)


def test_supported_forms_are_recognised():
    from fd_export.forms import unet_form

    assert not unet_form(TINY_UNET).prepare
    xl = unet_form(dict(TINY_UNET, addition_embed_type="text_time", addition_time_embed_dim=8,
                        projection_class_embeddings_input_dim=6 * 8 + 24))
    assert (xl.prepare, xl.added_inputs, xl.pooled_dim) == (True, ["pooled", "time_ids"], 24)
    if_like = unet_form(dict(TINY_UNET, addition_embed_type="text", encoder_hid_dim=24))
    assert (if_like.prepare, if_like.raw_dim) == (True, 24)


def test_text_added_embedding_and_projection_split_equals_diffusers(tmp_path):
    """IF stage I's conditioning form (addition_embed_type="text", encoder_hid_proj) through
    cond_prepare + the split graphs equals diffusers' forward on the raw states."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**dict(TINY_UNET, addition_embed_type="text", encoder_hid_dim=24,
                                       addition_embed_type_num_heads=4, time_embedding_act_fn="silu")).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    m = export_model(str(tmp_path), "if-form", unet, dict(num_train_timesteps=1000), None,
                     dict(kind="embedding", seq_len=5, dim=24), with_full=True)
    assert m["prepare"]["inputs"] == ["states"] and m["prepare"]["projects_states"] and m["cond"]["dim"] == 16
    g = torch.jit.load(str(tmp_path / "unet.pt"))
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([900.0, 10.0])
    raw = torch.randn(2, 5, 24)
    with torch.no_grad():
        cond, extra = g.cond_prepare(raw)
        emb = g.time_embed(t, extra)
        feats = g.encoder(x, emb, cond)
        out = g.decoder(feats[0], emb, cond, *feats[1:])
        want = unet(x, t, encoder_hidden_states=raw).sample
    assert (out - want).abs().max() < 1e-5
    assert (g.full(x, t, raw) - want).abs().max() < 1e-5


def test_export_sd_names_the_missing_component(tmp_path):
    from fd_export.sd import export_sd

    for sub in ("unet", "text_encoder", "tokenizer", "vae", "scheduler", "tokenizer_2"):
        (tmp_path / "ckpt" / sub).mkdir(parents=True)
    with pytest.raises(ExportError) as e:
        export_sd(str(tmp_path / "ckpt"), str(tmp_path / "out"))
    assert "missing `text_encoder_2/`" in str(e.value)
    (tmp_path / "ckpt" / "text_encoder_2").mkdir()
    with pytest.raises(ExportError) as e:
        export_sd(str(tmp_path / "ckpt"), str(tmp_path / "out"), controlnet=str(tmp_path / "cn"))
    assert "cn: missing `config.json`" in str(e.value)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_tome_settings_and_refusals(tmp_path):
    from diffusers import UNet2DConditionModel

    from fd_export.export import export_tome
    from fd_export.tome import apply_tome, tome_settings

    for bad, words in ((1.0, "outside [0, 1)"), (-0.1, "outside [0, 1)"), (0.8, "above tomesd's maximum")):
        with pytest.raises(ValueError, match=re.escape(words)):
            tome_settings(bad)
    with pytest.raises(ValueError, match="max-downsample"):
        tome_settings(0.5, max_downsample=3)
    # a UNet without transformer blocks has nothing to merge
    plain = UNet2DConditionModel(**dict(TINY_UNET, down_block_types=("DownBlock2D", "DownBlock2D"),
                                        up_block_types=("UpBlock2D", "UpBlock2D"),
                                        mid_block_type="UNetMidBlock2D"))
    with pytest.raises(ValueError, match="no transformer blocks"):
        apply_tome(plain, tome_settings(0.5))
    # re-exporting a ToMe export with ToMe again is refused, naming the folder
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"tome": {"ratio": 0.5}}))
    with pytest.raises(ExportError, match="already exported with ToMe"):
        export_tome(str(tmp_path / "m"), str(tmp_path / "o"), tome_settings(0.5))
    assert not (tmp_path / "o").exists()


def test_tome_reexport_needs_the_unet_weights(tmp_path):
    """--tome on a folder exported without its UNet weights (older exports, SD folders): refused,
    naming the folder and what to do."""
    from fd_export.export import export_tome
    from fd_export.tome import tome_settings

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"exporter": {}, "unet_config": {}}))
    with pytest.raises(ExportError, match="no unet_weights.safetensors listed"):
        export_tome(str(tmp_path / "m"), str(tmp_path / "o"), tome_settings(0.5))
    assert not (tmp_path / "o").exists()


def _tiny_dit(**kw):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    cfg = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=4, num_attention_heads=2,
               attention_head_dim=8, num_embeds_ada_norm=10, norm_type="ada_norm_zero", norm_elementwise_affine=False)
    cfg.update(kw)
    return DiTTransformer2DModel(**cfg)


@pytest.mark.parametrize("split", [0, 4, -1])
def test_dit_split_outside_the_model_is_refused(tmp_path, split):
    from fd_export.dit import export_dit

    with pytest.raises(ValueError, match=r"split .* outside 1\.\.3"):
        export_dit(str(tmp_path / "m"), "x", _tiny_dit(), {}, split=split)
    assert not (tmp_path / "m").exists(), "nothing written"


def test_dit_refusals_name_the_field(tmp_path):
    from fd_export.dit import default_split, export_dit

    assert [default_split(n) for n in (28, 6, 4, 2)] == [18, 4, 3, 1]
    with pytest.raises(ValueError, match="guidance_channels 5 outside 1..4"):
        export_dit(str(tmp_path / "m"), "x", _tiny_dit(), {}, guidance_channels=5)
    with pytest.raises(ValueError, match="out_channels"):
        export_dit(str(tmp_path / "m"), "x", _tiny_dit(out_channels=3), {})
    m = _tiny_dit()
    for blk in m.transformer_blocks:  # a label table without the null row (class_dropout_prob 0)
        emb = blk.norm1.emb.class_embedder
        emb.embedding_table = torch.nn.Embedding(10, emb.embedding_table.embedding_dim)
    with pytest.raises(ValueError, match="no null class"):
        export_dit(str(tmp_path / "m"), "x", m, {})
    assert not (tmp_path / "m").exists(), "nothing written"


def test_dit_split_graphs_equal_diffusers(tmp_path):
    from fd_export.dit import export_dit

    m = _tiny_dit()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    man = export_dit(str(tmp_path / "m"), "x", m, {"num_train_timesteps": 1000}, split=1)
    assert (man["kind"], man["split"]["encoder_blocks"], man["mid_shape"], man["skip_shapes"]) == ("dit", 1, [16, 4, 4], [])
    g = torch.jit.load(str(tmp_path / "m" / "unet.pt"))
    x, t, ids = torch.randn(3, 4, 8, 8), torch.tensor([999.0, 500.0, 3.0]), torch.tensor([1, 10, 4])
    cond = torch.jit.load(str(tmp_path / "m" / "cond_encoder.pt"))(ids)
    emb = g.time_embed(t)
    out = g.decoder(g.encoder(x, emb, cond)[0], emb, cond)
    analysis = g.decoder_analysis(g.encoder(x, emb, cond)[0], emb, cond)
    with torch.no_grad():
        ref = m(x, timestep=t.long(), class_labels=ids).sample
    assert torch.equal(out, ref) and torch.equal(analysis[0], ref) and len(analysis) == 1 + 3


def test_dit_stepcache_graphs_cut_diffusers_forward(tmp_path):
    """TeaCache / FBCache on a DiT: embed -> first block -> other blocks -> head is diffusers'
    forward; the indicator is block 0's modulated input as diffusers computes it (hooked); the
    polynomial is fitted and recorded."""
    from fd_export.dit import STEPCACHE_GRAPHS, export_dit

    m = _tiny_dit()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    man = export_dit(str(tmp_path / "m"), "x", m, {"num_train_timesteps": 1000})
    assert all(man["graphs"][k]["file"] == "stepcache.pt" for k in STEPCACHE_GRAPHS)
    tc = man["teacache"]
    assert len(tc["coefficients"]) == 5 and tc["fit"]["points"] == 49 * 20 and tc["fit"]["sampler"] == "ddim"
    g = torch.jit.load(str(tmp_path / "m" / "unet.pt"))
    sc = torch.jit.load(str(tmp_path / "m" / "stepcache.pt"))
    x, t, ids = torch.randn(3, 4, 8, 8), torch.tensor([999.0, 500.0, 3.0]), torch.tensor([1, 10, 4])
    cond = torch.jit.load(str(tmp_path / "m" / "cond_encoder.pt"))(ids)
    emb = g.time_embed(t)
    grabbed = {}
    hook = m.transformer_blocks[0].norm1.register_forward_hook(lambda mod, a, out: grabbed.__setitem__("ind", out[0]))
    try:
        with torch.no_grad():
            ref = m(x, timestep=t.long(), class_labels=ids).sample
    finally:
        hook.remove()
    h0, ind = sc.stepcache_embed(x, emb, cond)
    out = sc.stepcache_head(sc.stepcache_rest(sc.stepcache_first(h0, emb, cond), emb, cond), emb, cond)
    assert torch.allclose(out, ref, atol=1e-6)
    # tokens as [B, D, h, w] grids: back to [B, N, D] in patch order
    assert torch.allclose(ind.flatten(2).transpose(1, 2), grabbed["ind"], atol=1e-6)
    no = export_dit(str(tmp_path / "n"), "x", m, {}, with_stepcache=False)
    assert no["teacache"] is None and "stepcache_embed" not in no["graphs"]


def test_video_unet_needs_a_frame_count_and_image_unets_take_none(tmp_path):
    from diffusers import UNet3DConditionModel

    u3 = UNet3DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4,
                              out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                              up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=16,
                              attention_head_dim=4, norm_num_groups=8)
    spec = dict(kind="embedding", seq_len=4, dim=16)
    with pytest.raises(ValueError, match="fixed frame count"):
        export_model(str(tmp_path / "v"), "v", u3, {}, None, spec)
    with pytest.raises(ValueError, match="only a UNet3DConditionModel"):
        export_model(str(tmp_path / "i"), "i", UNet2DConditionModel(**TINY_UNET), {}, None, spec, frames=3)
    assert not (tmp_path / "v").exists() and not (tmp_path / "i").exists(), "nothing written"
    m = export_model(str(tmp_path / "ok"), "ok", u3, {}, None, spec, frames=2)
    assert (m["kind"], m["frames"], m["mid_shape"]) == ("unet3d", 2, [32, 2, 4, 4])


def test_deepcache_ids_outside_the_unet_are_refused(tmp_path):
    from fd_export.methods.deepcache import official_cut

    unet = tiny_unet(16)  # 3 down blocks of 1 layer: ids 0, 1 / 3, 4 / 6, 7
    assert [official_cut(unet, i)[2] for i in (0, 1, 3, 4, 6, 7)] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"block 3 outside 0\.\.2"):
        official_cut(unet, 9)
    with pytest.raises(ValueError, match=r"layer 2 outside 0\.\.1"):
        official_cut(unet, 2)
    with pytest.raises(ValueError, match="cache_branch_id 9"):
        export_model(str(tmp_path / "m"), "t", unet, {}, None, dict(kind="embedding", seq_len=5, dim=8),
                     deepcache_ids=(0, 9))
    assert not (tmp_path / "m").exists(), "nothing written"


@pytest.mark.parametrize("norm", ["default", "scale_shift"])
def test_teacache_probe_is_the_first_resnets_modulated_input(norm):
    """The probe equals the tensor diffusers' first resnet modulates by t (norm2's input with the
    default time_embedding_norm; its scale-shifted output otherwise), read by forward hooks."""
    from fd_export.methods.teacache import TeaCacheProbe

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4, resnet_time_scale_shift=norm,
    ).eval()
    r = unet.down_blocks[0].resnets[0]
    got = {}
    if norm == "default":
        hook = r.norm2.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0]))
    else:  # the scale-shifted tensor goes through the nonlinearity into dropout
        hook = r.dropout.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0]))
    x, t, c = torch.randn(3, 2, 8, 8), torch.tensor([999.0, 500.0, 3.0]), torch.randn(3, 5, 8)
    with torch.no_grad():
        unet(x, t, encoder_hidden_states=c)
        probe = TeaCacheProbe(unet)(x, TimeEmbed(unet)(t))
    hook.remove()
    want = got["x"]
    if norm == "default":
        assert (probe - want).abs().max().item() <= 1e-6
    else:
        assert (r.nonlinearity(probe) - want).abs().max().item() <= 1e-6


def test_add_teacache_writes_probe_and_given_polynomial(tmp_path):
    """add_teacache_graph on an export that keeps its weights: the traced probe equals the eager
    one, the polynomial is stored as given, other graph files are untouched; a text export
    without coefficients is refused naming the flag."""
    from fd_export.methods.teacache import TeaCacheProbe, add_teacache_graph

    unet = tiny_unet(16)
    spec = dict(kind="embedding", seq_len=5, dim=8)
    m = export_model(str(tmp_path), "t", unet, dict(num_train_timesteps=1000), None, spec, save_weights=True)
    before = {k: g["sha256"] for k, g in m["graphs"].items()}
    with pytest.raises(ValueError, match="--coefficients"):
        add_teacache_graph(str(tmp_path))
    m = add_teacache_graph(str(tmp_path), [0.0, 1.0, 0.0])
    assert m["teacache"] == dict(coefficients=[0.0, 1.0, 0.0], fit=None)
    assert {k: g["sha256"] for k, g in m["graphs"].items() if k != "teacache_probe"} == before
    assert m["graphs"]["teacache_probe"]["file"] == "teacache.pt" and m["graphs"]["teacache_probe"]["flops"] > 0
    traced = torch.jit.load(str(tmp_path / "teacache.pt")).teacache_probe
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([700.0, 20.0])
    with torch.no_grad():
        emb = TimeEmbed(unet)(t)
        assert (traced(x, emb) - TeaCacheProbe(unet)(x, emb)).abs().max().item() <= 1e-5


def test_add_tgate_graphs_equal_diffusers_and_skip_attention(tmp_path):
    """add_tgate_graphs: the capture graph is the UNet's forward and returns one output per
    attention layer; feeding those outputs back to the reuse graphs gives the same prediction
    with fewer FLOPs; a UNet without cross-attention is refused."""
    from fd_export.methods.tgate import add_tgate_graphs, tgate_layers

    unet = tiny_unet(16)
    spec = dict(kind="embedding", seq_len=5, dim=8)
    export_model(str(tmp_path), "t", unet, dict(num_train_timesteps=1000), None, spec, save_weights=True)
    m = add_tgate_graphs(str(tmp_path))
    cross, selfs = m["tgate"]["cross_layers"], m["tgate"]["self_layers"]
    assert len(cross) == len(selfs) == 7 and all(n.endswith("attn2") for n in cross)
    g = torch.jit.load(str(tmp_path / "tgate.pt"))
    x, t, c = torch.randn(2, 2, 16, 16), torch.tensor([700.0, 20.0]), torch.randn(2, 5, 8)
    with torch.no_grad():
        emb = TimeEmbed(unet)(t)
        out = g.tgate_capture(x, emb, c)
        ref = unet(x, t, encoder_hidden_states=c).sample
        ca, sa = list(out[1:1 + len(cross)]), list(out[1 + len(cross):])
        assert (out[0] - ref).abs().max().item() <= 1e-5
        assert (g.tgate_sa_reuse(x, emb, c, *sa) - ref).abs().max().item() <= 1e-5
        assert (g.tgate_ca_reuse(x, emb, c, *ca)[0] - ref).abs().max().item() <= 1e-5
        assert (g.tgate_both_reuse(x, emb, c, *ca, *sa) - ref).abs().max().item() <= 1e-5
    f = {k: m["graphs"][k]["flops"] for k in m["graphs"] if k.startswith("tgate")}
    assert f["tgate_both_reuse"] < min(f["tgate_sa_reuse"], f["tgate_ca_reuse"]) <= f["tgate_capture"]
    plain = UNet2DConditionModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type="UNetMidBlock2D",
                                 norm_num_groups=4)
    with pytest.raises(ValueError, match="cross-attention"):
        tgate_layers(plain)


def _fmnist_dit(seed: int):
    from fd_export.fmnist import build_fmnist_dit

    torch.manual_seed(seed)
    m = build_fmnist_dit()
    with torch.no_grad():  # adaLN-zero starts every block as the identity: make the blocks matter
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_dit_encoder_analysis_is_added_from_the_checkpoint_it_was_exported_from(tmp_path):
    """add_dit_analysis.py on an export without the graph: refused for another checkpoint or step
    (nothing written), else analysis.pt returns the cached tokens and every earlier encoder block."""
    from fd_export.dit import export_dit
    from fd_export.fmnist import (
        ANALYSIS_FILE,
        SCHEDULER_CONFIG,
        add_fmnist_dit_analysis,
    )

    model, out = _fmnist_dit(0), tmp_path / "m"
    export_dit(str(out), "x", model, dict(SCHEDULER_CONFIG), with_full=False, with_stepcache=False,
               family="fmnist-dit", extra_manifest=dict(training=dict(checkpoint_step=7)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["graphs"]["encoder_analysis"]["file"] == "unet.pt", "new exports carry the graph"
    del manifest["graphs"]["encoder_analysis"]  # an export from before the graph existed
    (out / "manifest.json").write_text(json.dumps(manifest))
    ck = tmp_path / "ck.pt"
    torch.save(dict(ema=_fmnist_dit(1).state_dict(), step=7), ck)
    with pytest.raises(ValueError, match="do not reproduce"):
        add_fmnist_dit_analysis(str(ck), str(out))
    torch.save(dict(ema=model.state_dict(), step=8), ck)
    with pytest.raises(ValueError, match="exported from step 7"):
        add_fmnist_dit_analysis(str(ck), str(out))
    assert not (out / ANALYSIS_FILE).exists() and "encoder_analysis" not in json.loads((out / "manifest.json").read_text())["graphs"]
    torch.save(dict(ema=model.state_dict(), step=7), ck)
    m = add_fmnist_dit_analysis(str(ck), str(out))
    assert m["graphs"]["encoder_analysis"]["file"] == ANALYSIS_FILE
    g = torch.jit.load(str(out / ANALYSIS_FILE))
    enc = torch.jit.load(str(out / "unet.pt"))
    x, emb, cond = torch.randn(3, 1, 28, 28), torch.randn(3, 256), torch.tensor([[[0.0]], [[4.0]], [[10.0]]])
    with torch.no_grad():
        tokens, *earlier = g.encoder_analysis(x, emb, cond)
        (cached,) = enc.encoder(x, emb, cond)
    assert len(earlier) == m["split"]["encoder_blocks"] - 1 and all(t.shape == cached.shape for t in earlier)
    assert torch.allclose(tokens, cached, atol=1e-6)


def test_dit_pab_graphs_are_added_from_the_checkpoint_and_equal_the_blocks(tmp_path):
    """add_dit_pab.py on a step-cache export without PAB's graphs: refused for another checkpoint
    (nothing written); else pab.pt's capture equals stepcache_first + stepcache_rest, and reusing
    the captured attention outputs at the same step gives the same tokens."""
    from fd_export.dit import export_dit
    from fd_export.fmnist import SCHEDULER_CONFIG, add_fmnist_dit_pab
    from fd_export.methods.pab import PAB_FILE, PAB_GRAPHS

    model, out = _fmnist_dit(0), tmp_path / "m"
    export_dit(str(out), "x", model, dict(SCHEDULER_CONFIG), with_full=False, family="fmnist-dit",
               extra_manifest=dict(training=dict(checkpoint_step=7)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(manifest["graphs"][g]["file"] == PAB_FILE for g in PAB_GRAPHS), "new exports carry the graphs"
    for g in PAB_GRAPHS:  # an export from before the graphs existed
        del manifest["graphs"][g]
    (out / PAB_FILE).unlink()
    (out / "manifest.json").write_text(json.dumps(manifest))
    ck = tmp_path / "ck.pt"
    torch.save(dict(ema=_fmnist_dit(1).state_dict(), step=7), ck)
    with pytest.raises(ValueError, match="do not reproduce"):
        add_fmnist_dit_pab(str(ck), str(out))
    assert not (out / PAB_FILE).exists()
    torch.save(dict(ema=model.state_dict(), step=7), ck)
    m = add_fmnist_dit_pab(str(ck), str(out))
    assert all(m["graphs"][g]["file"] == PAB_FILE for g in PAB_GRAPHS)
    pab, sc = torch.jit.load(str(out / PAB_FILE)), torch.jit.load(str(out / "stepcache.pt"))
    x, emb, cond = torch.randn(3, 1, 28, 28), torch.randn(3, 256), torch.tensor([[[0.0]], [[4.0]], [[10.0]]])
    with torch.no_grad():
        h0, _ = sc.stepcache_embed(x, emb, cond)
        want = sc.stepcache_rest(sc.stepcache_first(h0, emb, cond), emb, cond)
        hl, *attn = pab.pab_capture(h0, emb, cond)
        again = pab.pab_reuse(h0, emb, cond, *attn)
    assert len(attn) == len(model.transformer_blocks)
    assert torch.allclose(hl, want, atol=1e-5) and torch.allclose(again, hl, atol=1e-5)


def test_sdxl_refiner_unet_is_refused_naming_the_field_before_any_file(tmp_path):
    """An SDXL refiner-style UNet (5 time ids: `projection_class_embeddings_input_dim` = pooled +
    5 x addition_time_embed_dim) is refused naming the field and what the checkpoint looks like,
    before anything (not even the tokenizer files) is written."""
    import make_families as mf

    from fd_export.sd import export_sd

    ckpt = tmp_path / "ckpt"
    mf.build_sdxl(str(ckpt))
    cfg = json.loads((ckpt / "unet" / "config.json").read_text())
    cfg["projection_class_embeddings_input_dim"] = 5 * 8 + 24
    UNet2DConditionModel.from_config(cfg).save_pretrained(str(ckpt / "unet"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"projection_class_embeddings_input_dim` = 64.*SDXL refiner"):
        export_sd(str(ckpt), str(out))
    assert not out.exists(), "nothing written"
