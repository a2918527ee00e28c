"""DeepCache (Ma et al. 2023): the shallow / deep graphs of DeepCache's own cache_branch_id cuts
(and fd's earlier block-level branches), adding them to an export, and the official helper's
schedule as a reference."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..flops import DTYPES, count_flops
from ..folder import load_unet, sha256, write_manifest
from ..graphs import Decoder, Encoder, TimeEmbed
from ..schema import deepcache_prefix
from ..tracing import trace_methods


# ---------------------------------------------------------------------------------------------
# DeepCache (Ma et al. 2023), block-level branch b: at a full step the whole UNet runs and the
# input h of up block U[n-1-b] is cached; at a cached step only the shallow path runs: conv_in and
# the down-path units whose skips the last b+1 up blocks consume, then U[n-1-b..] on cached h.
# ---------------------------------------------------------------------------------------------
def shallow_skip_count(unet, branch: int) -> int:
    ups = unet.up_blocks
    return sum(len(b.resnets) for b in ups[len(ups) - 1 - branch:])


class ShallowEncoder(nn.Module):
    """conv_in + down-path units up to the `count`-th skip (a unit = resnet[+attention], or a
    downsampler), mirroring CrossAttnDownBlock2D / DownBlock2D.forward."""

    def __init__(self, unet, branch: int | None = None, count: int | None = None):
        super().__init__()
        self.conv_in = unet.conv_in
        self.count = shallow_skip_count(unet, branch) if count is None else count
        blocks, n = [], 1
        for block in unet.down_blocks:
            if n >= self.count:
                break
            blocks.append(block)
            n += len(block.resnets) + (1 if block.downsamplers is not None else 0)
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, sample, emb, cond):
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            attns = block.attentions if getattr(block, "has_cross_attention", False) else [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                if len(skips) >= self.count:
                    return tuple(skips)
                h = resnet(h, emb)
                if attn is not None:
                    h = attn(h, encoder_hidden_states=cond, return_dict=False)[0]
                skips.append(h)
            if block.downsamplers is not None:
                if len(skips) >= self.count:
                    return tuple(skips)
                for ds in block.downsamplers:
                    h = ds(h)
                skips.append(h)
        return tuple(skips[: self.count])


# ---------------------------------------------------------------------------------------------
# DeepCache as its authors define it (horseee/DeepCache, DeepCacheSDHelper): `cache_branch_id` =
# 3 * block + layer. At a cached step every module "after" the cut returns its output of the last
# full step: down block `block`'s layers >= `layer` and every deeper down block, the mid block,
# every up block with (reversed) index > `block`, and in up block `block` its layers with reversed
# index > `layer`. What still runs: conv_in, the down path before the cut, and up block `block`'s
# last `layer` + 1 layers with the up blocks after it. The cached tensor is the input of the first
# of those up layers. Block-level branch b of fd's earlier graphs is the id whose layer is the down
# block's layer count (the whole up block runs).
# ---------------------------------------------------------------------------------------------
def official_cut(unet, cache_branch_id: int) -> tuple[int, int, int]:
    """DeepCache's cache_branch_id -> (index of the cut up block in unet.up_blocks, its first
    shallow layer, number of skips the shallow path produces); refuses ids outside the UNet."""
    block, layer = divmod(int(cache_branch_id), 3)
    n = len(unet.up_blocks)
    if cache_branch_id < 0 or block >= n:
        raise ValueError(f"DeepCache cache_branch_id {cache_branch_id}: block {block} outside 0..{n - 1} "
                         f"(ids 0..{3 * n - 1}: block = id // 3, layer = id % 3)")
    down, up = unet.down_blocks[block], unet.up_blocks[n - 1 - block]
    nl = len(down.resnets)
    if len(up.resnets) != nl + 1:
        raise ValueError(f"DeepCache ids need up block {n - 1 - block} to have one layer more than down block {block} "
                         f"({len(up.resnets)} vs {nl})")
    if layer > nl:
        raise ValueError(f"DeepCache cache_branch_id {cache_branch_id}: layer {layer} outside 0..{nl} "
                         f"(down block {block} has {nl} layers)")
    count = 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in unet.down_blocks[:block]) + layer
    return n - 1 - block, nl - layer, count


def block_branch_id(unet, branch: int) -> int:
    """The cache_branch_id equal to fd's earlier block-level branch `branch` (the whole up block
    U[n-1-branch] in the shallow path)."""
    return 3 * branch + len(unet.down_blocks[branch].resnets)


def _up_layers(block, h, emb, cond, res, start: int, stop: int):
    """Layers start..stop-1 of an up block (CrossAttnUpBlock2D / UpBlock2D.forward's loop), each
    taking the last remaining skip of `res`; returns (h, res left)."""
    attns = block.attentions if getattr(block, "has_cross_attention", False) else [None] * len(block.resnets)
    for resnet, attn in list(zip(block.resnets, attns))[start:stop]:
        h = torch.cat([h, res[-1]], dim=1)
        res = res[:-1]
        h = resnet(h, emb)
        if attn is not None:
            h = attn(h, encoder_hidden_states=cond, return_dict=False)[0]
    return h, res


class CutDeepDecoder(Decoder):
    """Full step of DeepCache `cache_branch_id`: up blocks before the cut and the cut block's
    layers before it, on the encoder features -> the cached tensor."""

    def __init__(self, unet, cache_branch_id: int):
        super().__init__(unet)
        cut, self.start, _ = official_cut(unet, cache_branch_id)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[:cut])
        self.block = unet.up_blocks[cut]
        self.conv_norm_out = self.conv_act = self.conv_out = None

    def forward(self, mid, emb, cond, *skips):
        skips = tuple(skips)
        h = self.run_up(mid, emb, cond, skips, skips[0].shape[-2:], final_index=-1)
        left = skips[: len(skips) - sum(len(b.resnets) for b in self.up_blocks)]
        h, _ = _up_layers(self.block, h, emb, cond, left[-len(self.block.resnets):], 0, self.start)
        return h


class CutShallowDecoder(Decoder):
    """Cached step of DeepCache `cache_branch_id`: the cut block's remaining layers (+ its
    upsampler) on the cached tensor and the fresh shallow skips, the up blocks after it, output."""

    def __init__(self, unet, cache_branch_id: int):
        super().__init__(unet)
        cut, self.start, self.count = official_cut(unet, cache_branch_id)
        self.block = unet.up_blocks[cut]
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[cut + 1:])
        self.last = cut == len(unet.up_blocks) - 1

    def forward(self, h, emb, cond, *skips):
        block, skips = self.block, tuple(skips)
        h, skips = _up_layers(block, h, emb, cond, skips, self.start, len(block.resnets))
        if block.upsamplers is not None:
            size = skips[-1].shape[2:] if (not self.last and any(s % self.up_factor != 0 for s in skips[0].shape[-2:])) else None
            for up in block.upsamplers:
                h = up(h, size)
        if len(self.up_blocks):
            h = self.run_up(h, emb, cond, skips, skips[0].shape[-2:], final_index=len(self.up_blocks) - 1)
        if self.conv_norm_out is not None:
            h = self.conv_act(self.conv_norm_out(h))
        return self.conv_out(h)


class DeepDecoder(Decoder):
    """Up blocks U[0..n-1-b) on the encoder features: returns h, the input of U[n-1-b]."""

    def __init__(self, unet, branch: int):
        super().__init__(unet)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[: len(unet.up_blocks) - 1 - branch])
        self.conv_norm_out = self.conv_act = self.conv_out = None

    def forward(self, mid, emb, cond, *skips):
        return self.run_up(mid, emb, cond, tuple(skips), skips[0].shape[-2:], final_index=-1)


class ShallowDecoder(Decoder):
    """Up blocks U[n-1-b..] + norm/conv_out on cached h and the fresh shallow skips."""

    def __init__(self, unet, branch: int):
        super().__init__(unet)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[len(unet.up_blocks) - 1 - branch:])

    def forward(self, h, emb, cond, *skips):
        sample = self.run_up(h, emb, cond, tuple(skips), skips[0].shape[-2:], final_index=len(self.up_blocks) - 1)
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return self.conv_out(sample)


def deepcache_parts(unet, ids: Sequence[int], supported: bool = True) -> dict:
    """DeepCache graphs to export for DeepCache's own cache_branch_ids `ids`: {graph prefix
    (`deepcache_id{N}`): (manifest key `id{N}`, shallow encoder, deep decoder, shallow decoder, N)}.
    An id outside the UNet is refused before anything is written. A UNet whose blocks DeepCache's
    shallow path does not cover (`supported` False: IF, UNet3D) gets none. (Exports before
    2026-12-02 have block-level entries `b` instead; fd-model still reads them.)"""
    if not supported:
        return {}
    out = {}
    for i in ids:
        _, _, count = official_cut(unet, i)  # refuses an id outside the UNet
        key = f"id{i}"
        out[deepcache_prefix(key)] = (key, ShallowEncoder(unet, count=count), CutDeepDecoder(unet, i),
                                      CutShallowDecoder(unet, i), int(i))
    return out


def deepcache_graph_inputs(parts: dict, sample, emb, cond, feats) -> tuple[dict, dict]:
    """The DeepCache graphs of `parts` (deepcache_parts) with their example inputs, ready for
    trace_methods, and their manifest entries."""
    traced, specs = {}, {}
    for part, (key, se, dd, sd, cid) in parts.items():
        with torch.no_grad():
            cached = dd(feats[0], emb, cond, *feats[1:])
            shallow = se(sample, emb, cond)
        traced[f"{part}_shallow_encoder"] = (se, [sample, emb, cond])
        traced[f"{part}_deep_decoder"] = (dd, [feats[0], emb, cond, *feats[1:]])
        traced[f"{part}_shallow_decoder"] = (sd, [cached, emb, cond, *shallow])
        specs[key] = dict(shallow_skips=se.count, cache_shape=list(cached.shape[1:]), cache_branch_id=cid)
    return traced, specs


DEEPCACHE_FILE = "deepcache.pt"


def add_deepcache_graphs(model_dir: str, ids: Sequence[int]) -> dict:
    """Add DeepCache graphs for DeepCache's own `cache_branch_id`s to an existing export that keeps
    its UNet weights (the committed default model), in their own file (deepcache.pt), leaving every
    other graph file unchanged; older block-level entries get the id they equal recorded. The
    eager UNet is rebuilt from unet_weights.safetensors (hash checked)."""

    unet, m = load_unet(model_dir)
    if m.get("tome"):
        raise ValueError(f"{model_dir}: a ToMe export; re-export it from its source with experiments/export/export_tome.py")
    dtype = DTYPES[m["dtype"]]
    unet = unet.to(dtype)
    parts = deepcache_parts(unet, ids)
    te, enc = TimeEmbed(unet), Encoder(unet)
    h, w = m["sample_size"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], h, w, generator=g).to(dtype)
    cond = torch.randn(1, m["cond"]["seq_len"], m["cond"]["dim"], generator=g).to(dtype)
    with torch.no_grad():
        emb = te(torch.tensor([500.0]))
        feats = enc(sample, emb, cond)
    traced, specs = deepcache_graph_inputs(parts, sample, emb, cond, feats)
    old_files = {k: g["file"] for k, g in m["graphs"].items()}
    if any(f == DEEPCACHE_FILE for f in old_files.values()):
        m["graphs"] = {k: v for k, v in m["graphs"].items() if v["file"] != DEEPCACHE_FILE}
        m["deepcache"] = {k: v for k, v in m["deepcache"].items() if not k.startswith("id")}
    path = os.path.join(model_dir, DEEPCACHE_FILE)
    trace_methods(traced, path)
    digest = sha256(path)
    for key, (module, inputs) in traced.items():
        m["graphs"][key] = dict(file=DEEPCACHE_FILE, method=key, sha256=digest, flops=count_flops(module, inputs))
    for key, spec in m.get("deepcache", {}).items():
        if key.isdigit() and "cache_branch_id" not in spec:
            spec["cache_branch_id"] = block_branch_id(unet, int(key))
    m.setdefault("deepcache", {}).update(specs)
    write_manifest(model_dir, m)
    return m


class OfficialDeepCache:
    """DeepCache's own skipping rule (horseee/DeepCache, `DeepCacheSDHelper`, uniform mode),
    transcribed as forward hooks on a diffusers UNet2DConditionModel: the test reference for fd's
    `deepcache:N:ID` plans.

    Step i (counted by UNet calls) is a full step when i % interval == 0; then every wrapped module
    runs and its output is kept. At another step a module returns its kept output instead of
    running when the rule says skip: down / up blocks and their resnets, attentions and
    down/upsamplers carry (block, layer) indices, up-path indices counted from the output end;
    with (B, L) = divmod(cache_branch_id, 3): the mid block always; a block index > B; in block B,
    a down layer >= L or an up layer > L (a whole block is wrapped as layer 0)."""

    def __init__(self, unet, interval: int, cache_branch_id: int):
        self.interval, (self.block, self.layer) = interval, divmod(cache_branch_id, 3)
        self.step, self.kept, self.handles = -1, {}, [unet.register_forward_pre_hook(self._next)]
        for b, blk in enumerate(unet.down_blocks):
            n = len(blk.resnets)
            for i, m in enumerate(blk.resnets):
                self._wrap(m, ("down", b, i))
            for i, m in enumerate(getattr(blk, "attentions", None) or []):
                self._wrap(m, ("down", b, i), "attn")
            for m in blk.downsamplers or []:
                self._wrap(m, ("down", b, n), "ds")
            self._wrap(blk, ("down", b, 0), "block")
        self._wrap(unet.mid_block, ("mid", 0, 0), "block")
        nb = len(unet.up_blocks)
        for j, blk in enumerate(unet.up_blocks):
            b, n = nb - 1 - j, len(blk.resnets)
            for i, m in enumerate(blk.resnets):
                self._wrap(m, ("up", b, n - 1 - i))
            for i, m in enumerate(getattr(blk, "attentions", None) or []):
                self._wrap(m, ("up", b, n - 1 - i), "attn")
            for m in blk.upsamplers or []:
                self._wrap(m, ("up", b, 0), "us")
            self._wrap(blk, ("up", b, 0), "block")

    def _next(self, module, args):
        self.step += 1

    def skip(self, kind: str, b: int, layer: int) -> bool:
        if self.step % self.interval == 0:
            return False
        if kind == "mid" or b > self.block:
            return True
        if b < self.block:
            return False
        return layer >= self.layer if kind == "down" else layer > self.layer

    def _wrap(self, module, index, part="layer"):
        key, orig = index + (part,), module.forward

        def forward(*args, **kwargs):
            if self.skip(*index):
                return self.kept[key]
            out = orig(*args, **kwargs)
            self.kept[key] = out
            return out

        module.forward = forward
        self.handles.append((module, orig))

    def remove(self):
        self.handles[0].remove()
        for module, orig in self.handles[1:]:
            module.forward = orig
