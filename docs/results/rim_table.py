#!/usr/bin/env python3
"""Tables of the issue #14 result runs (rim_eval.py's OUT directory) as Markdown.

Usage: rim_table.py OUT
"""
import glob, json, os, sys

OUT = sys.argv[1]


def load(name):
    p = os.path.join(OUT, name, "result.json")
    return json.load(open(p)) if os.path.exists(p) else None


def rec(name):
    r = load(name)
    return r and r["reconstruction"]


def fmt(s, digits=3, scale=1.0):
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def cs_runs(tag, reg):
    """(converged run, within-1 % run, k, λ) of a regulariser on a test tag."""
    runs = sorted(glob.glob(os.path.join(OUT, f"test_{tag}_cs{reg}*")))
    runs = [os.path.basename(r) for r in runs if os.path.isdir(r)]
    conv = f"test_{tag}_cs{reg}200"
    short = [r for r in runs if r != conv]
    k = int(short[0][len(f"test_{tag}_cs{reg}"):]) if short else None
    return conv, (short[0] if short else None), k


def row(label, name, params="—"):
    s = rec(name)
    if s is None:
        return f"| {label} | {params} | (missing) | | | |"
    m = s["metrics"]
    return (f"| {label} | {params} | {fmt(m['ssim'])} | {fmt(m['psnr'], 2)} | {fmt(m['nmse'], 4)} | "
            f"{s['secondsPerImage'] * 1e3:.2f} |")


def params(model):
    r = load(model)
    return f"{r['training']['parameters']:,}" if r else "?"


def quality_table(dom, r, models):
    tag = f"{dom}_r{r}"
    lines = ["| method | parameters | SSIM | PSNR (dB) | NMSE | ms / image |", "|---|---|---|---|---|---|"]
    lines.append(row("zero-filled", f"test_{tag}_zf"))
    for reg, label in (("wavelet", "CS FISTA, Haar ℓ1"), ("tv", "CS FISTA, TV")):
        conv, short, k = cs_runs(tag, reg)
        lam = rec(conv)["cs"]["lambda"] if rec(conv) else "?"
        lines.append(row(f"{label}, λ = {lam}, 200 iterations", conv))
        if short:
            lines.append(row(f"{label}, λ = {lam}, {k} iterations (within 1 %)", short))
    for m in models:
        lines.append(row(f"RIM {m}", f"test_{tag}_{m}", params(m)))
    return "\n".join(lines)


def lesion_table(dom, r, models):
    tag = f"{dom}_les_r{r}"
    lines = ["| method | lesion NMSE | image NMSE | SSIM |", "|---|---|---|---|"]

    def lrow(label, name):
        s = rec(name)
        if s is None:
            return f"| {label} | (missing) | | |"
        return f"| {label} | {fmt(s['lesionNMSE'], 4)} | {fmt(s['metrics']['nmse'], 4)} | {fmt(s['metrics']['ssim'])} |"

    lines.append(lrow("zero-filled", f"test_{tag}_zf"))
    for reg, label in (("wavelet", "CS Haar ℓ1"), ("tv", "CS TV")):
        lines.append(lrow(f"{label} (200 iterations)", f"test_{tag}_cs{reg}200"))
    for m in models:
        lines.append(lrow(f"RIM {m}", f"test_{tag}_{m}"))
    return "\n".join(lines)


def traces():
    lines = ["| validation set | R | regulariser | λ (sweep best) | SSIM at 200 it. | iterations within 1 % |", "|---|---|---|---|---|---|"]
    for dom in ("fm", "ph"):
        for r in (4, 8):
            for reg in ("wavelet", "tv"):
                s = rec(f"val_{dom}_cs{reg}_r{r}")
                if s is None:
                    continue
                cs = s["cs"]
                lines.append(f"| {dom} | {r} | {reg} | {cs['lambda']} | {cs['ssimByIteration'][-1]:.3f} | {cs['iterationsWithin1Percent']} |")
    return "\n".join(lines)


fm32 = lambda r: [f"fm_{c}32_r{r}" for c in ("gru", "mgu", "indrnn")]
print("## CS tuning (validation)\n")
print(traces())
for r in (4, 8):
    print(f"\n## Fashion-MNIST test, R = {r}\n")
    print(quality_table("fm", r, fm32(r) + ([f"fm_{c}16_r4" for c in ("gru", "mgu", "indrnn")] if r == 4 else [])
                        + (["ph_gru32_r4", "ph_indrnn32_r4", "mix_gru32_r4", "mix_indrnn32_r4"] if r == 4 else [])))
    print(f"\n## Phantom test, R = {r}\n")
    print(quality_table("ph", r, fm32(r) + (["ph_gru32_r4", "ph_indrnn32_r4", "mix_gru32_r4", "mix_indrnn32_r4"] if r == 4 else [])))
for dom in ("fm", "ph"):
    for r in (4, 8):
        print(f"\n## Lesions ({dom}, R = {r})\n")
        print(lesion_table(dom, r, fm32(r) + (["ph_gru32_r4", "ph_indrnn32_r4", "mix_gru32_r4", "mix_indrnn32_r4"] if r == 4 else [])))
