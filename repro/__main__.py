"""`python -m mhc_repro [train] ...` and `python -m mhc_repro sweep ...` (console script `mhc-repro`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import plots
from .train import MODES, Config, config_dict, train


def _progress(total: int, desc: str):
    """A tqdm bar when tqdm is installed, else a line every 10 %."""
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

        def update(mode, step, loss, norm):
            bar.set_postfix_str(f"{mode} loss {loss:.3f} |g| {norm:.2g}", refresh=False)
            bar.update(1)

        return update, bar.close
    except ImportError:
        done = [0]

        def update(mode, step, loss, norm):
            done[0] += 1
            if done[0] % max(1, total // 10) == 0:
                print(f"{desc}: {done[0]}/{total} steps ({mode} loss {loss:.3f})", file=sys.stderr, flush=True)

        return update, lambda: None


def _final_loss(loss: list[float]) -> float:
    tail = loss[-max(1, len(loss) // 10):]
    return float("nan") if not all(math.isfinite(v) for v in tail) else sum(tail) / len(tail)


def run_train(cfg: Config, modes, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    update, close = _progress(cfg.steps * len(modes), "mhc-repro")
    results, maps = {}, {}
    try:
        for mode in modes:
            r = train(cfg, mode, update)
            maps[mode] = {k: v.tolist() for k, v in r.pop("_maps").items()}
            r["final_loss"] = _final_loss(r["loss"])
            results[mode] = r
    finally:
        close()
    metrics = {"config": config_dict(cfg), "modes": results}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    (out / "maps.json").write_text(json.dumps(maps, indent=1), encoding="utf-8")
    plots.curves(results, out / "loss_grad_norm.png")
    plots.gains(results, out / "amax_gain.png")
    plots.heatmaps(maps, out / "h_res_heatmaps.png")
    summary(metrics)
    print(f"wrote {out}/metrics.json, loss_grad_norm.png, amax_gain.png, h_res_heatmaps.png", file=sys.stderr)
    return metrics


def summary(metrics: dict) -> None:
    print(f"{'mode':9} {'final loss':>10} {'composite gain fwd':>19} {'bwd':>9} {'max |g|':>9} {'time':>7}")
    for mode, m in metrics["modes"].items():
        print(f"{mode:9} {m['final_loss']:10.4f} {m['composite_gain_fwd']:19.4g} {m['composite_gain_bwd']:9.4g} "
              f"{max(m['grad_norm']):9.3g} {m['seconds']:6.0f}s")


def run_sweep(cfg: Config, depths, lrs, modes, out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    cells = [(d, lr, mode) for d in depths for lr in lrs for mode in modes]
    update, close = _progress(cfg.steps * len(cells), "mhc-repro sweep")
    results = []
    try:
        for d, lr, mode in cells:
            r = train(replace(cfg, depth=d, lr=lr), mode, update)
            results.append({"depth": d, "lr": lr, "mode": mode, "final_loss": _final_loss(r["loss"]),
                             "max_grad_norm": max(r["grad_norm"]), "composite_gain_fwd": r["composite_gain_fwd"],
                             "composite_gain_bwd": r["composite_gain_bwd"], "seconds": r["seconds"]})
            (out / "sweep.json").write_text(json.dumps({"config": config_dict(cfg), "cells": results}, indent=1))
    finally:
        close()
    plots.sweep(results, out / "sweep.png")
    print(f"{'depth':>5} {'lr':>8} {'mode':9} {'final loss':>10} {'gain fwd':>9} {'gain bwd':>9}")
    for r in results:
        print(f"{r['depth']:5d} {r['lr']:8.1e} {r['mode']:9} {r['final_loss']:10.4f} "
              f"{r['composite_gain_fwd']:9.4g} {r['composite_gain_bwd']:9.4g}")
    print(f"wrote {out}/sweep.json and sweep.png", file=sys.stderr)
    return results


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("train", "sweep") else "train"
    d = Config()
    ap = argparse.ArgumentParser(prog=f"python -m mhc_repro {command}", description=__doc__ if command == "train"
                                 else "Sweep depth x learning rate; one short run per cell and mode.")
    ap.add_argument("--steps", type=int, default=d.steps if command == "train" else 200)
    ap.add_argument("--depth", type=int, default=d.depth, help="sublayers (two per block), even")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--width", type=int, default=d.width if command == "train" else 64, help="C, channels per stream")
    ap.add_argument("--n", type=int, default=d.n, help="streams")
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--seq", type=int, default=d.seq, help="odd: h tokens, SEP, h tokens")
    ap.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clipping (0 = off)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--modes", default=",".join(MODES) if command == "train" else "hc,mhc",
                    help="comma-separated subset of residual,hc,mhc")
    ap.add_argument("--out", type=Path, default=Path("repro-out" if command == "train" else "repro-sweep"))
    if command == "sweep":
        ap.add_argument("--depths", type=_ints, default=[8, 16, 24])
        ap.add_argument("--lrs", type=_floats, default=[3e-3, 1e-2, 3e-2])
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {list(MODES)}")
    try:
        cfg = Config(depth=args.depth, width=args.width, n=args.n, batch=args.batch, seq=args.seq,
                     steps=args.steps, lr=args.lr, clip=args.clip, seed=args.seed, threads=args.threads)
    except ValueError as e:
        ap.error(str(e))
    start = time.perf_counter()
    if command == "train":
        run_train(cfg, modes, args.out)
    else:
        run_sweep(cfg, args.depths, args.lrs, modes, args.out)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
