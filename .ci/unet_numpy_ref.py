#!/usr/bin/env python3
"""Pure-numpy reference forward pass of the image U-Net (docs/pytorch_interop.md, "U-Net").

The network is `UNet` of shared/peers/rf_torch.py (two resolutions, ResBlocks with GroupNorm and
SiLU, sinusoidal time embedding), with the channel counts c1, c2, the ResBlocks per level nb and
the GroupNorm group count as parameters. It is computed in float64 without torch:

    python unet_numpy_ref.py CHECKPOINT.safetensors INPUT.npy T.npy OUT.npy [--ema]
                             [--c1 32 --c2 64 --nb 2 --groups 8]

INPUT.npy is x [N, 1, H, W] (H and W even, 28 x 28 for the models reflowd trains), T.npy is
t [N] in [0, 1]; OUT.npy receives v = UNet(x, t) [N, 1, H, W] as float32.

The configuration comes from the checkpoint's `reflowd.model` metadata (a JSON ModelSpec:
{"kind": "unet", "version": 1, "channels": [c1, c2], "blocksPerLevel": nb, "groups": g, ...});
command-line flags override it. Without either, c1, c2 and nb are read off the tensor shapes and
the group count is 8 (rf_torch.py's). The weights must be exactly the module's state_dict:
every name with its shape, and no other (`ema.*` and `optimizer.*` tensors are set aside;
--ema uses the `ema.*` copy instead of the weights).

Conventions (PyTorch's): NCHW, convolution weights [O, C, kh, kw] with zero padding 1 (3x3) or 0
(1x1), the down-sampling conv has stride 2; Linear weights [out, in]; GroupNorm over
(C/groups, H, W) per sample and group with the biased variance and eps 1e-5; nearest 2x
up-sampling; skip connections are concatenated after the current features: cat([h, skip], 1).
The time embedding mirrors rf_torch.py's `sinusoidal`, whose frequencies and angles are float32:
at t*1000 ~ 1000 one float32 rounding of the angle is ~3e-5 rad, so the angles are formed in
float32 here too (and only cos/sin and everything after are float64).
"""
import argparse
import json
import re
import sys

import numpy as np

GROUPNORM_EPS = 1e-5
MAX_PERIOD = 10000.0


class UNetError(Exception):
    """A bad checkpoint, configuration or input; the message says which."""


# ----------------------------------------------------------------------------- configuration

def config_from_metadata(metadata):
    """(c1, c2, nb, groups) from the `reflowd.model` metadata value, each None when absent.
    Raises UNetError when the spec is not a U-Net of a version this script reads."""
    raw = (metadata or {}).get("reflowd.model")
    if raw is None:
        return None, None, None, None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UNetError(f"reflowd.model metadata is not JSON: {e}")
    if not isinstance(spec, dict):
        raise UNetError("reflowd.model metadata is not a JSON object")
    kind = spec.get("kind", "mlp")
    if kind != "unet":
        raise UNetError(f"reflowd.model has kind {kind!r}, this script reads only 'unet'")
    version = spec.get("version", 1)
    if version != 1:
        raise UNetError(f"reflowd.model is unet version {version!r}, this script reads version 1")
    c1 = c2 = None
    ch = spec.get("channels")
    if ch is not None:
        if not (isinstance(ch, list) and len(ch) == 2):
            raise UNetError(f"reflowd.model channels must be [c1, c2], got {ch!r}")
        c1, c2 = ch
    return c1, c2, spec.get("blocksPerLevel"), spec.get("groups")


def infer_from_shapes(weights):
    """(c1, c2, nb) read off the tensor shapes (stem, down2.0.c1 and the down1.* block count)."""
    try:
        c1 = int(weights["stem.weight"].shape[0])
        c2 = int(weights["down2.0.c1.weight"].shape[0])
    except KeyError as e:
        raise UNetError(f"cannot infer the configuration: no tensor {e.args[0]!r}")
    blocks = {int(m.group(1)) for k in weights for m in [re.match(r"down1\.(\d+)\.", k)] if m}
    return c1, c2, len(blocks)


def resolve_config(weights, metadata, c1=None, c2=None, nb=None, groups=None):
    """The configuration: flags over metadata over shapes; groups defaults to 8. Validated."""
    mc1, mc2, mnb, mg = config_from_metadata(metadata)
    c1 = c1 if c1 is not None else mc1
    c2 = c2 if c2 is not None else mc2
    nb = nb if nb is not None else mnb
    groups = groups if groups is not None else (mg if mg is not None else 8)
    if c1 is None or c2 is None or nb is None:
        ic1, ic2, inb = infer_from_shapes(weights)
        c1 = ic1 if c1 is None else c1
        c2 = ic2 if c2 is None else c2
        nb = inb if nb is None else nb
    for name, v in (("c1", c1), ("c2", c2), ("blocksPerLevel", nb), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UNetError(f"{name} must be a positive integer, got {v!r}")
    for name, c in (("c1", c1), ("c2", c2)):
        if c % groups != 0:
            raise UNetError(f"{name}={c} is not divisible by groups={groups}")
    if c1 % 2 != 0:
        raise UNetError(f"c1={c1} must be even (the time embedding has 2*c1 = cos/sin pairs)")
    return {"c1": c1, "c2": c2, "nb": nb, "groups": groups}


# ----------------------------------------------------------------------------- names and shapes

def resblock_shapes(prefix, cin, cout, te):
    s = {
        f"{prefix}.n1.weight": (cin,), f"{prefix}.n1.bias": (cin,),
        f"{prefix}.c1.weight": (cout, cin, 3, 3), f"{prefix}.c1.bias": (cout,),
        f"{prefix}.t.weight": (cout, te), f"{prefix}.t.bias": (cout,),
        f"{prefix}.n2.weight": (cout,), f"{prefix}.n2.bias": (cout,),
        f"{prefix}.c2.weight": (cout, cout, 3, 3), f"{prefix}.c2.bias": (cout,),
    }
    if cin != cout:
        s[f"{prefix}.skip.weight"] = (cout, cin, 1, 1)
        s[f"{prefix}.skip.bias"] = (cout,)
    return s


def level_blocks(c1, c2, nb):
    """[(module list name, [(cin, cout), ...])] in forward order."""
    return [
        ("down1", [(c1, c1)] * nb),
        ("down2", [(c1, c2)] + [(c2, c2)] * (nb - 1)),
        ("mid", [(c2, c2)] * 2),
        ("up2", [(2 * c2, c2)] + [(c2, c2)] * (nb - 1)),
        ("up1", [(2 * c1, c1)] + [(c1, c1)] * (nb - 1)),
    ]


def expected_shapes(c1, c2, nb):
    """Every state_dict name of rf_torch.py's UNet(c1, c2, nb) with its shape, in module order."""
    tdim, te = 2 * c1, 4 * c1
    s = {
        "temb.0.weight": (te, tdim), "temb.0.bias": (te,),
        "temb.2.weight": (te, te), "temb.2.bias": (te,),
        "stem.weight": (c1, 1, 3, 3), "stem.bias": (c1,),
    }
    blocks = dict(level_blocks(c1, c2, nb))

    def add_level(name):
        for i, (cin, cout) in enumerate(blocks[name]):
            s.update(resblock_shapes(f"{name}.{i}", cin, cout, te))

    add_level("down1")
    s.update({"pool.weight": (c1, c1, 3, 3), "pool.bias": (c1,)})
    for name in ("down2", "mid", "up2"):
        add_level(name)
    s.update({"upconv.weight": (c1, c2, 3, 3), "upconv.bias": (c1,)})
    add_level("up1")
    s.update({"onorm.weight": (c1,), "onorm.bias": (c1,),
              "out.weight": (1, c1, 3, 3), "out.bias": (1,)})
    return s


def select_weights(tensors, ema=False):
    """The model tensors (or their `ema.` copies), without optimizer state."""
    if ema:
        w = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not w:
            raise UNetError("--ema given but the checkpoint has no ema.* tensors")
        return w
    return {k: v for k, v in tensors.items() if not k.startswith(("ema.", "optimizer."))}


def check_weights(weights, cfg):
    """Strict name and shape check (like load_state_dict(strict=True)); returns float64 copies."""
    want = expected_shapes(cfg["c1"], cfg["c2"], cfg["nb"])
    missing = [k for k in want if k not in weights]
    extra = sorted(k for k in weights if k not in want)
    if missing or extra:
        raise UNetError(f"checkpoint does not match UNet{tuple(cfg.values())}: "
                        f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
                        f"unexpected {extra[:8]}{'…' if len(extra) > 8 else ''}")
    out = {}
    for k, shape in want.items():
        a = np.asarray(weights[k])
        if tuple(a.shape) != shape:
            raise UNetError(f"tensor {k} has shape {list(a.shape)}, expected {list(shape)}")
        a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise UNetError(f"tensor {k} has non-finite values")
        out[k] = a
    return out


# ----------------------------------------------------------------------------- layers

def conv2d(x, w, b, stride=1, padding=0):
    """PyTorch Conv2d (cross-correlation) on NCHW: x [N, C, H, W], w [O, C, kh, kw], b [O]."""
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    assert c == c2, (x.shape, w.shape)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # [N, C, H', W', kh, kw]
    win = win[:, :, : (ho - 1) * stride + 1 : stride, : (wo - 1) * stride + 1 : stride]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)  # im2col
    y = cols @ w.reshape(o, c * kh * kw).T + b
    return y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def linear(x, w, b):
    return x @ w.T + b


def group_norm(x, groups, gamma, beta, eps=GROUPNORM_EPS):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    mean = g.mean(axis=(2, 3, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(2, 3, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(n, c, h, w) * gamma[None, :, None, None] + beta[None, :, None, None]


def silu(x):
    return x / (1.0 + np.exp(-x))


def upsample_nearest2x(x):
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


def sinusoidal(t, dim, max_period=MAX_PERIOD):
    """[cos(w_i*T), sin(w_i*T)], T = t*1000, w_i = P^(-i/half); w_i, T and w_i*T in float32 (see
    the module docstring), cos/sin in float64."""
    half = dim // 2
    f32 = np.float32
    # exponent in float32 as torch forms it; exp in float64 rounded once to float32 (numpy's
    # float32 exp is often 1 ulp off, torch's and glibc's expf are (almost) correctly rounded)
    expo = f32(-np.log(max_period)) * np.arange(half, dtype=f32) / f32(half)
    freqs = np.exp(expo.astype(np.float64)).astype(f32)
    a = ((t.astype(f32) * f32(1000.0))[:, None] * freqs[None]).astype(np.float64)
    return np.concatenate([np.cos(a), np.sin(a)], axis=1)


# ----------------------------------------------------------------------------- network

def resblock(p, prefix, x, e, groups):
    h = conv2d(silu(group_norm(x, groups, p[f"{prefix}.n1.weight"], p[f"{prefix}.n1.bias"])),
               p[f"{prefix}.c1.weight"], p[f"{prefix}.c1.bias"], padding=1)
    h = h + linear(e, p[f"{prefix}.t.weight"], p[f"{prefix}.t.bias"])[:, :, None, None]
    h = conv2d(silu(group_norm(h, groups, p[f"{prefix}.n2.weight"], p[f"{prefix}.n2.bias"])),
               p[f"{prefix}.c2.weight"], p[f"{prefix}.c2.bias"], padding=1)
    if f"{prefix}.skip.weight" in p:
        x = conv2d(x, p[f"{prefix}.skip.weight"], p[f"{prefix}.skip.bias"])
    return h + x


def unet_forward(p, cfg, x, t):
    """v = UNet(x, t) in float64; p from check_weights, x [N, 1, H, W], t [N]."""
    c1, nb, g = cfg["c1"], cfg["nb"], cfg["groups"]
    x = np.asarray(x, dtype=np.float64)
    e = linear(sinusoidal(np.asarray(t), 2 * c1), p["temb.0.weight"], p["temb.0.bias"])
    e = linear(silu(e), p["temb.2.weight"], p["temb.2.bias"])

    def level(name, h, count):
        for i in range(count):
            h = resblock(p, f"{name}.{i}", h, e, g)
        return h

    h = conv2d(x, p["stem.weight"], p["stem.bias"], padding=1)
    s1 = h = level("down1", h, nb)
    h = conv2d(h, p["pool.weight"], p["pool.bias"], stride=2, padding=1)
    s2 = h = level("down2", h, nb)
    h = level("mid", h, 2)
    h = level("up2", np.concatenate([h, s2], axis=1), nb)
    h = conv2d(upsample_nearest2x(h), p["upconv.weight"], p["upconv.bias"], padding=1)
    h = level("up1", np.concatenate([h, s1], axis=1), nb)
    h = silu(group_norm(h, g, p["onorm.weight"], p["onorm.bias"]))
    return conv2d(h, p["out.weight"], p["out.bias"], padding=1)


# ----------------------------------------------------------------------------- files

def load_checkpoint(path):
    """(tensors as numpy arrays, metadata dict) of a safetensors file."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    try:
        tensors = load_file(path)
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types (and OSError)
        raise UNetError(f"cannot read {path}: {e}")
    return tensors, metadata


def load_inputs(x_path, t_path):
    try:
        x = np.load(x_path, allow_pickle=False)
        t = np.load(t_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UNetError(f"cannot read the inputs: {e}")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % 2 or x.shape[3] % 2 or x.shape[0] < 1:
        raise UNetError(f"x must be [N, 1, H, W] with N >= 1 and H, W even, got {list(x.shape)}")
    if t.shape != (x.shape[0],):
        raise UNetError(f"t must be [N] = [{x.shape[0]}], got {list(t.shape)}")
    for name, a in (("x", x), ("t", t)):
        if not np.issubdtype(a.dtype, np.floating):
            raise UNetError(f"{name} must be a float array, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise UNetError(f"{name} has non-finite values")
    return x, t


def add_config_flags(ap):
    ap.add_argument("--c1", type=int, default=None, help="channels at full resolution (overrides metadata)")
    ap.add_argument("--c2", type=int, default=None, help="channels at half resolution (overrides metadata)")
    ap.add_argument("--nb", type=int, default=None, help="ResBlocks per level (overrides metadata)")
    ap.add_argument("--groups", type=int, default=None, help="GroupNorm groups (metadata, else 8)")
    ap.add_argument("--ema", action="store_true", help="use the ema.* weights")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("input", help="x.npy [N, 1, H, W]")
    ap.add_argument("t", help="t.npy [N]")
    ap.add_argument("out", help="where v.npy [N, 1, H, W] float32 is written")
    add_config_flags(ap)
    a = ap.parse_args()
    try:
        tensors, metadata = load_checkpoint(a.checkpoint)
        weights = select_weights(tensors, a.ema)
        cfg = resolve_config(weights, metadata, a.c1, a.c2, a.nb, a.groups)
        p = check_weights(weights, cfg)
        x, t = load_inputs(a.input, a.t)
        v = unet_forward(p, cfg, x, t)
        np.save(a.out, v.astype(np.float32))
    except UNetError as e:
        print(f"unet_numpy_ref: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
