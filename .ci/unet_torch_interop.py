#!/usr/bin/env python3
"""Loads a reflowd U-Net checkpoint into PyTorch and compares the forward pass with reflowd's.

    python unet_torch_interop.py CHECKPOINT.safetensors INPUT.npy T.npy EXPECTED.npy [--ema]
                                 [--c1 .. --c2 .. --nb .. --groups ..] [--tolerance 1e-4]

The module is `UNet` of rf_torch.py, found in $PEERS (default: ../shared/peers relative to the
repository root). The configuration comes from the checkpoint's `reflowd.model` metadata, or the
flags, as in unet_numpy_ref.py (whose configuration reader this script shares). rf_torch.py's
UNet always builds GroupNorm(8, ·); for another group count every GroupNorm's `num_groups` is set
after construction (the parameters do not depend on it). The weights go in with
`load_state_dict(strict=True)`, the forward pass runs in float32 on x [N, 1, H, W] and t [N], and
the result is compared with EXPECTED.npy (reflowd's output).

Prints one JSON line {"max_abs_err", "ok", ...}; exits 0 when max |torch - expected| <= tolerance,
1 when it is larger (or not finite), 2 on bad input.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import unet_numpy_ref as ref  # noqa: E402  (configuration and input checks, no torch)


def load_peer_unet():
    peers = os.environ.get("PEERS", os.path.join(os.path.dirname(HERE), "..", "shared", "peers"))
    if not os.path.isfile(os.path.join(peers, "rf_torch.py")):
        raise ref.UNetError(f"rf_torch.py not found in {os.path.abspath(peers)} (set PEERS)")
    sys.path.insert(0, peers)
    import rf_torch
    return rf_torch.UNet


def build_model(unet_cls, cfg):
    import torch.nn as nn
    model = unet_cls(cfg["c1"], cfg["c2"], cfg["nb"])
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.num_groups = cfg["groups"]
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("input", help="x.npy [N, 1, H, W]")
    ap.add_argument("t", help="t.npy [N]")
    ap.add_argument("expected", help="reflowd's v.npy [N, 1, H, W]")
    ref.add_config_flags(ap)
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    a = ap.parse_args()
    try:
        import torch
        from safetensors.torch import load_file
        torch.set_num_threads(a.threads)
        unet_cls = load_peer_unet()
        try:
            tensors = load_file(a.checkpoint)
        except Exception as e:  # safetensors' own error types and OSError
            raise ref.UNetError(f"cannot read {a.checkpoint}: {e}")
        _, metadata = ref.load_checkpoint(a.checkpoint)
        weights = ref.select_weights(tensors, a.ema)
        cfg = ref.resolve_config(weights, metadata, a.c1, a.c2, a.nb, a.groups)
        model = build_model(unet_cls, cfg)
        try:
            model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
        except RuntimeError as e:
            raise ref.UNetError(f"load_state_dict(strict=True) failed: {e}")
        x, t = ref.load_inputs(a.input, a.t)
        expected = np.load(a.expected, allow_pickle=False)
        if expected.shape != x.shape:
            raise ref.UNetError(f"expected has shape {list(expected.shape)}, x has {list(x.shape)}")
    except (ref.UNetError, OSError, ValueError) as e:
        print(f"unet_torch_interop: {e}", file=sys.stderr)
        return 2
    model.eval()
    with torch.no_grad():
        v = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                  torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))).numpy()
    err = float(np.max(np.abs(v.astype(np.float64) - expected.astype(np.float64))))
    ok = bool(np.isfinite(err) and err <= a.tolerance)
    print(json.dumps({"max_abs_err": err if np.isfinite(err) else None, "ok": ok, "tolerance": a.tolerance,
                      "max_abs_torch": float(np.max(np.abs(v))), "config": cfg,
                      "n": int(x.shape[0]), "torch": torch.__version__}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
