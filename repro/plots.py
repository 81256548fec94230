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
    """Heatmaps over depth x learning rate, one column per mode: max composite gain (top) and final loss (bottom);
    a diverged run (non-finite loss) is marked 'div'."""
    modes = [m for m in ("residual", "hc", "mhc") if any(r["mode"] == m for r in results)]
    depths = sorted({r["depth"] for r in results})
    lrs = sorted({r["lr"] for r in results})
    fig, axes = plt.subplots(2, len(modes), figsize=(3.8 * len(modes), 6.5), squeeze=False)
    finite = [r for r in results if np.isfinite(r["final_loss"])]
    gmax = max(2.0, *(np.log10(max(r["composite_gain_fwd"], r["composite_gain_bwd"])) for r in results))
    lmin, lmax = (min(r["final_loss"] for r in finite), max(r["final_loss"] for r in finite)) if finite else (0, 1)
    for col, mode in enumerate(modes):
        cells = {(r["depth"], r["lr"]): r for r in results if r["mode"] == mode}
        gain = np.full((len(lrs), len(depths)), np.nan)
        loss = np.full_like(gain, np.nan)
        for (d, lr), r in cells.items():
            i, j = lrs.index(lr), depths.index(d)
            gain[i, j] = max(r["composite_gain_fwd"], r["composite_gain_bwd"])
            loss[i, j] = r["final_loss"]
        for ax, data, title, log in ((axes[0, col], gain, "max composite gain", True),
                                     (axes[1, col], loss, "final loss", False)):
            shown = np.log10(data) if log else data
            im = ax.imshow(shown, origin="lower", cmap="magma_r" if log else "viridis", aspect="auto",
                           vmin=0 if log else lmin, vmax=gmax if log else lmax)  # one scale for every mode
            for (i, j), v in np.ndenumerate(data):
                ax.text(j, i, "div" if not np.isfinite(v) else f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="w" if log and np.isfinite(v) and np.log10(v) > 1 else "k")
            ax.set_xticks(range(len(depths)), [str(d) for d in depths])
            ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
            ax.set(title=f"{mode}: {title}", xlabel="depth (sublayers)", ylabel="learning rate")
            fig.colorbar(im, ax=ax, fraction=0.046, label="log10" if log else None)
    fig.suptitle("Where HC's composite Amax gain explodes and mHC's stays at 1 (gain colour: log10)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
