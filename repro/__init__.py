"""Small-scale reproduction of mHC's stability finding (P Sec. 3.1, Figs. 3, 7, 8): residual vs HC vs mHC.

`python -m mhc_repro` trains one small decoder-only LM per mode (`residual`, `hc`, `mhc`) with the same seed, data
and budget, then measures the per-layer and composite Amax gains of the trained H_res maps with the library's own
`amax_gain` op and writes `metrics.json` and three figures. `python -m mhc_repro sweep` repeats it over depth x
learning rate and draws where HC's gain explodes or its loss diverges while mHC stays bounded.

Data: a copy task generated on the fly (no download): each sequence is `a_1 .. a_h SEP a_1 .. a_h` with random
tokens a_i, and the loss is taken on the copied half, which only attention over distance h can predict. It is the
cheapest task with real long-range structure that trains in minutes on a CPU.
"""
