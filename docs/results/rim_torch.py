#!/usr/bin/env python3
"""PyTorch peer of `reflowd bench mri`'s RIM rows: the same RIM (mridc's stack: conv 5×5 + ReLU,
1×1 recurrent cell, dilated conv 3×3 + ReLU, 1×1 recurrent cell, conv 3×3 → 2, T steps, the
data-consistency gradient by centred orthonormal FFTs) timed per image for inference (batch of
`--batch` images, no gradients) and for a training step (L1 on every estimate, Adam).

Usage: OMP_NUM_THREADS=1 python3 rim_torch.py --threads 1 --size 28 --features 32 --steps 8 --batch 16 --reps 5
Prints one JSON line with the keys of `reflowd bench mri`.
"""
import argparse, json, time

import torch
import torch.nn as nn

p = argparse.ArgumentParser()
for name, default in [("threads", 1), ("size", 28), ("features", 32), ("steps", 8), ("batch", 16), ("train-batch", 8), ("reps", 5)]:
    p.add_argument("--" + name, type=int, default=default)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


class Cell(nn.Module):
    def __init__(self, kind, f):
        super().__init__()
        self.kind = kind
        gates = {"gru": 3, "mgu": 2, "indrnn": 1}[kind]
        self.w = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(gates))
        self.u = nn.ModuleList(nn.Conv2d(f, f, 1, bias=False) for _ in range(gates)) if kind != "indrnn" else None
        self.r = nn.Parameter(torch.randn(1, f, 1, 1) * 0.01) if kind == "indrnn" else None

    def forward(self, x, h):
        if self.kind == "gru":
            r = torch.sigmoid(self.w[0](x) + self.u[0](h))
            z = torch.sigmoid(self.w[1](x) + self.u[1](h))
            n = torch.tanh(self.w[2](x) + r * self.u[2](h))
            return (1 - z) * n + z * h
        if self.kind == "mgu":
            f = torch.sigmoid(self.w[0](x) + self.u[0](h))
            c = torch.tanh(self.w[1](x) + f * self.u[1](h))
            return f * h + (1 - f) * c
        return torch.relu(self.w[0](x) + self.r * h)


class RIM(nn.Module):
    def __init__(self, kind, f, steps):
        super().__init__()
        self.steps, self.f = steps, f
        self.conv_in = nn.Conv2d(4, f, 5, padding=2)
        self.cell1 = Cell(kind, f)
        self.conv_mid = nn.Conv2d(f, f, 3, padding=2, dilation=2)
        self.cell2 = Cell(kind, f)
        self.conv_out = nn.Conv2d(f, 2, 3, padding=1, bias=False)

    def forward(self, x, y, mask):
        def A(z):
            c = torch.complex(z[:, 0], z[:, 1])
            k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(c, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
            return k * mask

        def AH(k):
            c = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k * mask, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
            return torch.stack([c.real, c.imag], 1)

        n, _, hgt, wid = x.shape
        h1 = torch.zeros(n, self.f, hgt, wid)
        h2 = torch.zeros_like(h1)
        out = []
        for _ in range(self.steps):
            grad = AH(A(x) - y)
            a = torch.relu(self.conv_in(torch.cat([x, grad], 1)))
            h1 = self.cell1(a, h1)
            h2 = self.cell2(torch.relu(self.conv_mid(h1)), h2)
            x = x + self.conv_out(h2)
            out.append(x)
        return out


def stats(ts):
    ts = sorted(t * 1e3 for t in ts)
    return {"median_ms": ts[len(ts) // 2], "min_ms": ts[0], "max_ms": ts[-1], "n": len(ts)}


def problem(n):
    s = a.size
    x = torch.rand(n, 2, s, s) * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    mask = (torch.rand(n, s, s) < 0.25).to(torch.complex64)
    c = torch.complex(x[:, 0], x[:, 1])
    y = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(c, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)) * mask
    x0c = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(y, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return torch.stack([x0c.real, x0c.imag], 1), y, mask, x


res = {"bench": "mri-torch", "torch": torch.__version__, "threads": a.threads,
       "config": {k: getattr(a, k.replace("-", "_")) for k in ["size", "features", "steps", "batch", "train-batch", "reps"]}}
x0, y, mask, _ = problem(a.batch)
inf = {}
for kind in ("gru", "mgu", "indrnn"):
    net = RIM(kind, a.features, a.steps)
    with torch.no_grad():
        net(x0, y, mask)
        ts = []
        for _ in range(a.reps):
            t = time.perf_counter()
            net(x0, y, mask)
            ts.append((time.perf_counter() - t) / a.batch)
    inf[kind] = stats(ts) | {"params": sum(p.numel() for p in net.parameters())}
res["rim_inference_per_image"] = inf

net = RIM("gru", a.features, a.steps)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
w = torch.logspace(-1, 0, a.steps)
w = w / w.sum()
xt0, yt, mt, target = problem(a.train_batch)
ts = []
for i in range(a.reps + 1):
    t = time.perf_counter()
    out = net(xt0, yt, mt)
    loss = sum(wi * (o - target).abs().mean() for wi, o in zip(w, out))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i > 0:
        ts.append(time.perf_counter() - t)
res["rim_gru_train_step"] = stats(ts)
print(json.dumps(res))
