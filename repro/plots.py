"""The three figures: loss and gradient norm (a), Amax gains over depth (b, P Figs. 3/7), H_res heatmaps (c, Fig. 8)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"residual": "tab:gray", "hc": "tab:red", "mhc": "tab:blue"}


def _smooth(y, k: int = 10):
    y = np.asarray(y, float)
    if len(y) < k:
        return y
    return np.convolve(np.nan_to_num(y, nan=np.nanmax(y[np.isfinite(y)], initial=0)), np.ones(k) / k, mode="valid")


def curves(modes: dict, path: Path) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for mode, m in modes.items():
        ax[0].plot(_smooth(m["loss"]), label=mode, color=COLORS[mode])
        ax[1].plot(_smooth(m["grad_norm"]), label=mode, color=COLORS[mode])
    ax[0].set(title="(a) loss on the copied half (10-step mean)", xlabel="step", ylabel="cross-entropy")
    ax[1].set(title="gradient norm (10-step mean)", xlabel="step", yscale="log")
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gains(modes: dict, path: Path) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("hc", "mhc"):
        if mode not in modes:
            continue
        m, c = modes[mode], COLORS[mode]
        layers = np.arange(len(m["layer_gain_fwd"]))
        ax[0].plot(layers, m["layer_gain_fwd"], "-", color=c, label=f"{mode} forward")
        ax[0].plot(layers, m["layer_gain_bwd"], "--", color=c, label=f"{mode} backward")
        ax[1].plot(layers, m["composite_gain_fwd_by_layer"], "-", color=c, label=f"{mode} forward (H^l...H^0)")
        ax[1].plot(layers, m["composite_gain_bwd_by_layer"], "--", color=c, label=f"{mode} backward (H^L-1...H^l)")
    ax[0].set(title="(b) per-layer Amax gain of H_res (P Figs. 3a/7a)", xlabel="layer", yscale="log")
    ax[1].set(title="composite Amax gain (P Figs. 3b/7b)", xlabel="layer", yscale="log")
    for a in ax:
        a.axhline(1.0, color="k", lw=0.5)
        a.legend(fontsize=8)
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmaps(maps: dict, path: Path) -> None:
    """maps: {mode: {"layer": (n, n), "composite": (n, n)}} for one token."""
    modes = [m for m in ("hc", "mhc") if m in maps]
    fig, axes = plt.subplots(len(modes), 2, figsize=(8.5, 4 * len(modes)), squeeze=False)
    for row, mode in zip(axes, modes):
        for ax, key in zip(row, ("layer", "composite")):
            M = np.asarray(maps[mode][key], float)
            im = ax.imshow(M, cmap="RdBu_r", vmin=-np.abs(M).max(), vmax=np.abs(M).max())
            for (i, j), v in np.ndenumerate(M):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
            rows, cols = (np.array2string(s, precision=2) for s in (M.sum(1), M.sum(0)))
            what = "one layer" if key == "layer" else "composite over depth"
            ax.set_title(f"{mode}: {what} H_res\nrow sums {rows}\ncol sums {cols}", fontsize=9)
            ax.set_xticks(range(len(M)))
            ax.set_yticks(range(len(M)))
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("(c) H_res of one token (P Fig. 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(results: list[dict], path: Path) -> None:
    """Composite gain and final loss vs depth, one line per (mode, lr)."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    lrs = sorted({r["lr"] for r in results})
    styles = dict(zip(lrs, ["-", "--", ":", "-."] * 4))
    markers = dict(zip(lrs, ["o", "s", "^", "D"] * 4))
    for mode in ("residual", "hc", "mhc"):
        for lr in lrs:
            rs = sorted((r for r in results if r["mode"] == mode and r["lr"] == lr), key=lambda r: r["depth"])
            if not rs:
                continue
            d = [r["depth"] for r in rs]
            kw = dict(color=COLORS[mode], ls=styles[lr], marker=markers[lr], label=f"{mode} lr={lr:g}")
            if mode != "residual":
                ax[0].plot(d, [max(r["composite_gain_fwd"], r["composite_gain_bwd"]) for r in rs], **kw)
            ax[1].plot(d, [r["final_loss"] if np.isfinite(r["final_loss"]) else np.nan for r in rs], **kw)
    ax[0].set(title="max composite Amax gain (fwd/bwd)", xlabel="depth (sublayers)", yscale="log")
    ax[0].axhline(2.0, color="k", lw=0.5)
    ax[1].set(title="final loss (mean of last 10 %); gaps = diverged", xlabel="depth (sublayers)")
    for a in ax:
        a.legend(fontsize=7, ncol=2)
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
