"""Shared machinery of the asv suite: parameters from the spec table and the entry points, input construction, the
bytes-moved model, timing helpers and the device copy bandwidth.

Every benchmark module builds its classes with `op_benchmark(op)`; the class is generic over the backend contract:

- forward:          `backend.<op>(*inputs, **options)`
- backward:         the VJP alone. torch backends: `torch.autograd.grad` on a graph built in `setup` (native autograd,
                    no recomputed forward); any other backend: `backend.vjp(op, inputs, cotangents, **options)`
                    (which includes whatever forward the backend recomputes inside its VJP).
- forward+backward: torch: forward with autograd recording + `torch.autograd.grad`; backends with `value_and_vjp`
                    (jax): forward and VJP as one jitted program; others: the op, then its VJP.

`setup` raises NotImplementedError (asv's "skip") for combinations that a backend does not claim (capabilities),
that do not fit the device, or whose shape config names another device (GPU configs skip on CPU).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# torch.cuda.is_available() through NVML, so that asking it in asv's forkserver does not break CUDA in the forks
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

from mhc_backends import available_backends, load_backend
from mhc_ref import mhc_init, sinkhorn
from mhc_spec.table import eval_dim, load, resolve_shape

SPEC = load()
PRESET = "paper"

# -- asv parameters -------------------------------------------------------------------------------------------------
BACKENDS: tuple[str, ...] = tuple(sorted(available_backends()))  # entry-point metadata only: nothing imported
# cpu_small, cpu, paper_3b, paper_9b, paper_27b; MHC_BENCH_SHAPES="cpu_small,cpu" narrows them (the quick profile)
SHAPES: tuple[str, ...] = tuple(s for s in SPEC.shapes
                                if s in (os.environ.get("MHC_BENCH_SHAPES") or ",".join(SPEC.shapes)).split(","))
DTYPES: tuple[str, ...] = tuple(sorted({d for s in SPEC.shapes.values() for d in s.dtypes}))
MODES: tuple[str, ...] = ("forward", "backward", "forward+backward")
LOW_PRECISION = ("bfloat16", "float16")
ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}

# Maps and coefficient parameters stay float32 when the activations are 16-bit (P Eqs. 10-19: x bf16, phi tf32,
# alpha, b and every H fp32); this is also what the torch backend accepts for bf16 x.
MAP_INPUTS = frozenset({"phi", "alpha", "b", "h_pre", "h_post", "h_res"})

# -- the bytes-moved model ------------------------------------------------------------------------------------------
# Bytes per token: P Table 2's element counts (read, written) times itemsizes. a = activation itemsize (x, f_out, y),
# m = map itemsize (the n^2 + 2n coefficients: float32 for 16-bit activations). The parameters phi (nC x (n^2+2n))
# and w_sub are read once per call, not per token, and are left out, as is F's internal I/O (P Table 2 excludes it).
# Backward rows count the minimum a fused kernel must touch: saved inputs and incoming cotangents read, gradients of
# the per-token inputs written. mhc_layer is the sum of its three mHC kernels (P Sec. 4.3.1): forward reads
# (3n+1)C + n^2 + 2n and writes (n+1)C + n^2 + 2n elements; mhc_stack is L times mhc_layer.
TRAFFIC: dict[str, dict[str, tuple[str, str]]] = {
    #  op               direction    reads (bytes / token)                writes (bytes / token)
    "residual":     {"forward":  ("2*C*a",                              "C*a"),
                     "backward": ("2*C*a",                              "C*a")},
    "sinkhorn":     {"forward":  ("n*n*a",                              "n*n*a"),
                     "backward": ("2*n*n*a",                            "n*n*a")},
    "mhc_coeffs":   {"forward":  ("n*C*a",                              "n*n*m+2*n*m"),
                     "backward": ("n*C*a+n*n*m+2*n*m",                  "n*C*a")},
    "mhc_pre":      {"forward":  ("n*C*a+n*m",                          "C*a"),
                     "backward": ("n*C*a+n*m+C*a",                      "n*C*a+n*m")},
    "mhc_post_res": {"forward":  ("n*C*a+C*a+n*m+n*n*m",                "n*C*a"),
                     "backward": ("2*n*C*a+C*a+n*m+n*n*m",              "n*C*a+C*a+n*m+n*n*m")},
}
LAYER_PARTS = ("mhc_coeffs", "mhc_pre", "mhc_post_res")


def bytes_per_token(op: str, mode: str, n: int, C: int, dtype: str, L: int = 1) -> int:
    """Bytes one token moves in `op` for `mode` ('forward', 'backward' or 'forward+backward'); L layers for
    mhc_stack."""
    parts = LAYER_PARTS * (L if op == "mhc_stack" else 1) if op in ("mhc_layer", "mhc_stack") else (op,)
    directions = ("forward", "backward") if mode == "forward+backward" else (mode,)
    if op not in ("mhc_layer", "mhc_stack") and op not in TRAFFIC:
        raise ValueError(f"bytes_per_token: op must be one of {sorted(TRAFFIC) + ['mhc_layer', 'mhc_stack']}, "
                         f"got {op!r}")
    if mode not in MODES:
        raise ValueError(f"bytes_per_token: mode must be one of {list(MODES)}, got {mode!r}")
    sizes = {"n": n, "C": C, "a": ITEMSIZE[dtype], "m": ITEMSIZE["float32" if dtype in LOW_PRECISION else dtype]}
    return sum(eval_dim(f, sizes) for p in parts for d in directions for f in TRAFFIC[p][d])


def bytes_moved(op: str, mode: str, shape: str, dtype: str) -> int:
    s = SPEC.shapes[shape]
    return s.tokens * bytes_per_token(op, mode, s.n, s.C, dtype, s.L)


# -- run-time knobs -------------------------------------------------------------------------------------------------
def measure_budget() -> float:
    """Seconds a track_ function may spend timing one callable (MHC_BENCH_TRACK_BUDGET; the quick profile lowers it)."""
    return float(os.environ.get("MHC_BENCH_TRACK_BUDGET", "1.0"))


# -- backends -------------------------------------------------------------------------------------------------------
@functools.cache
def get_backend(name: str):
    """The loaded backend, or NotImplementedError (asv: skip) when its entry point cannot be loaded here."""
    try:
        return load_backend(name)
    except Exception as e:  # a declared backend whose framework is missing is "not installed" for the suite
        raise NotImplementedError(f"backend {name!r} cannot be loaded: {type(e).__name__}: {e}") from e


def framework_of(array: Any) -> str:
    """'numpy', 'torch', 'jax' or the module of a backend's native array type."""
    if isinstance(array, np.ndarray):
        return "numpy"
    root = type(array).__module__.split(".")[0]
    return {"jaxlib": "jax"}.get(root, root)


def device_name(backend) -> str:
    """The backend's device as torch/jax spell it: 'cuda:0 (NVIDIA H100)' -> 'cuda:0'."""
    return str(backend.device).split()[0]


def is_gpu_device(device: str) -> bool:
    return not str(device).startswith("cpu")


def is_emulated(backend) -> bool:
    """Kernels run by an interpreter (Triton's TRITON_INTERPRET=1): correct results, meaningless timings."""
    return "interpret" in str(backend.device).lower() and os.environ.get("MHC_BENCH_EMULATED", "0") != "1"


@functools.cache
def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def block(value: Any) -> Any:
    """Wait for asynchronous device work behind `value` (a native array or a tuple/dict of them)."""
    leaves = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else (value,)
    for leaf in leaves:
        if leaf is None:
            continue
        if hasattr(leaf, "block_until_ready"):  # jax
            leaf.block_until_ready()
        elif framework_of(leaf) == "torch" and leaf.is_cuda:
            import torch

            torch.cuda.synchronize(leaf.device)
            return value
    return value


def free_memory_bytes(device: str) -> int:
    """Free memory of the device the backend computes on (host RAM for CPU backends)."""
    if is_gpu_device(device) and cuda_available():
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_runnable(backend, op: str | None, shape: str, dtype: str, mode: str) -> None:
    """Raise NotImplementedError (asv skip) with the reason when this combination is not to be run."""
    s = SPEC.shapes[shape]
    if dtype not in s.dtypes:
        raise NotImplementedError(f"shape {shape} runs dtypes {list(s.dtypes)}, not {dtype}")
    device = device_name(backend)
    if is_emulated(backend):
        raise NotImplementedError(f"backend {backend.name!r} runs emulated on {backend.device}: timings would mean "
                                  f"nothing (MHC_BENCH_EMULATED=1 runs it anyway)")
    if s.device == "gpu" and not is_gpu_device(device):
        raise NotImplementedError(f"shape {shape} is a GPU config; backend {backend.name!r} runs on {device}")
    if not is_gpu_device(device) and "cpu" not in backend.capabilities.devices:
        # e.g. Triton kernels under TRITON_INTERPRET=1: correct, but their CPU timings mean nothing
        raise NotImplementedError(f"backend {backend.name!r} claims devices {backend.capabilities.devices}, "
                                  f"not the cpu it would run on here")
    if op is not None and not backend.claims(op, dtype, grad=mode != "forward"):
        raise NotImplementedError(f"backend {backend.name!r} does not claim {op} {dtype} "
                                  f"{'with' if mode != 'forward' else 'without'} gradient")


def check_fits(need: int, device: str) -> None:
    free = free_memory_bytes(device)
    if need > 0.8 * free:
        raise NotImplementedError(f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device}")


# -- inputs ---------------------------------------------------------------------------------------------------------
def input_dtype(name: str, dtype: str) -> str:
    return "float32" if dtype in LOW_PRECISION and name in MAP_INPUTS else dtype


def host_inputs(op: str, shape: str, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 host values of `op`'s inputs at a shape config, keyed by input name (every name in the spec table)."""
    s = SPEC.shapes[shape]
    rng = np.random.default_rng(seed)
    lead = (s.B, s.T)
    params = {k: v.astype(np.float32) for k, v in mhc_init(s.n, s.C, rng=seed).items()}  # phi, alpha, b
    if any("L" in a.shape for a in SPEC.op(op).inputs):  # mhc_stack: one mhc_init per layer, stacked (L, ...)
        layers = [mhc_init(s.n, s.C, rng=seed + l) for l in range(s.L)]
        params = {k: np.stack([p[k] for p in layers]).astype(np.float32) for k in params}

    def normal(shp):
        return rng.standard_normal(shp, dtype=np.float32)

    def sigmoid(shp):
        return 1.0 / (1.0 + np.exp(-normal(shp)))

    def doubly_stochastic(shp):  # H_res: values do not change the work, realistic ones cost little
        return sinkhorn(normal(shp).astype(np.float64), t_max=20, eps=0.0).astype(np.float32)

    makers: dict[str, Callable[[tuple[int, ...]], np.ndarray]] = {
        "h_pre": sigmoid, "h_post": lambda shp: 2 * sigmoid(shp), "h_res": doubly_stochastic,
        "w_sub": lambda shp: normal(shp) / np.float32(np.sqrt(s.C)),
    }
    out = {}
    for arg in SPEC.op(op).inputs:
        if arg.required_when is not None:
            continue
        shp = resolve_shape(arg, lead, n=s.n, C=s.C, L=s.L)
        out[arg.name] = params[arg.name] if arg.name in params else makers.get(arg.name, normal)(shp)
    return out


def native_inputs(backend, op: str, shape: str, dtype: str) -> list[Any]:
    host = host_inputs(op, shape)
    return [backend.from_numpy(host[a.name], input_dtype(a.name, dtype)) if a.name in host else None
            for a in SPEC.op(op).inputs]


def estimate_device_bytes(op: str, shape: str, dtype: str, mode: str) -> int:
    """A generous bound on device memory: inputs, outputs, cotangents, gradients and autograd residuals (x 4), plus
    the 2 t_max Sinkhorn states autograd may keep per token."""
    s = SPEC.shapes[shape]
    spec = SPEC.op(op)
    sizes = {"n": s.n, "C": s.C, "L": s.L}
    elems = sum(int(np.prod(resolve_shape(a, (s.B, s.T), **sizes))) for a in spec.inputs + spec.outputs)
    factor = 1 if mode == "forward" else 4
    states = s.tokens * s.n * s.n * 2 * SPEC.options["t_max"].default * 4 if op in ("sinkhorn", "mhc_coeffs",
                                                                                   "mhc_layer") else 0
    if op == "mhc_stack":  # per layer: the Sinkhorn states and the saved state x_l
        states = s.L * s.tokens * (s.n * s.n * 2 * SPEC.options["t_max"].default + 4 * s.n * s.C) * 4
    return elems * ITEMSIZE["float32"] * factor + states


# -- timing ---------------------------------------------------------------------------------------------------------
def median_seconds(fn: Callable[[], Any], budget: float | None = None, min_repeat: int = 3,
                   max_repeat: int = 50) -> float:
    """Median wall time of `fn()` after one warm-up call, repeating until `budget` seconds or `max_repeat` runs."""
    budget = measure_budget() if budget is None else budget
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeat or (len(times) < max_repeat and time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_peak_mib(fn: Callable[[], Any]) -> float:
    """Peak CUDA memory allocated by one call of `fn` beyond what was allocated before it, in MiB."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_callable(backend, sample: Any, nbytes: int) -> Callable[[], Any]:
    """A device-to-device copy that moves `nbytes` in total (reads nbytes/2, writes nbytes/2), in the framework
    and on the device of `sample` (a native array of the backend)."""
    fw = framework_of(sample)
    elems = max(1, nbytes // 2 // ITEMSIZE["float32"])
    if fw == "numpy":
        src = np.ones(elems, dtype=np.float32)
        dst = np.empty_like(src)
        return lambda: np.copyto(dst, src)
    if fw == "torch":  # allocated on the device directly: no host round trip for GPU-sized copies
        import torch

        src = torch.ones(elems, dtype=torch.float32, device=sample.device)
        dst = torch.empty_like(src)
        return lambda: block(dst.copy_(src))
    src = backend.from_numpy(np.ones(elems, dtype=np.float32), "float32")
    return lambda: block(src.copy())  # jax and others: an out-of-place copy moves the same bytes


def copy_bandwidth(backend, sample: Any, nbytes: int, budget: float | None = None) -> float:
    """Measured copy bandwidth in bytes/s at the byte count of the op being compared."""
    return nbytes / median_seconds(copy_callable(backend, sample, nbytes), budget)


# -- the timed workload ---------------------------------------------------------------------------------------------
def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


class Workload:
    """One op on one backend at one shape config, dtype and mode; `run()` executes the timed unit once."""

    def __init__(self, backend_name: str, op: str, shape: str, dtype: str, mode: str, preset: str = PRESET):
        if mode not in MODES:
            raise ValueError(f"Workload: mode must be one of {list(MODES)}, got {mode!r}")
        backend = get_backend(backend_name)
        check_runnable(backend, op, shape, dtype, mode)
        check_fits(estimate_device_bytes(op, shape, dtype, mode), device_name(backend))
        self.backend, self.op, self.shape, self.dtype, self.mode = backend, op, shape, dtype, mode
        self.spec = SPEC.op(op)
        self.options = SPEC.op_options(op, preset)
        self.inputs = native_inputs(backend, op, shape, dtype)
        self.framework = framework_of(self.inputs[0])
        self.nbytes = bytes_moved(op, mode, shape, dtype)
        self.run = self._build()
        self.run()  # fail here (setup) rather than in a timed function; also warms caches / compiles

    def _call(self, inputs):
        return self.backend.call(self.op, inputs, **self.options)

    def _cotangents(self, outputs):
        rng = np.random.default_rng(1)
        return [self.backend.from_numpy(rng.standard_normal(tuple(o.shape), dtype=np.float32), str(self._dtype(o)))
                for o in outputs]

    def _dtype(self, native):
        return {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16",
                "torch.float64": "float64"}.get(str(native.dtype), str(native.dtype))

    def _build(self) -> Callable[[], Any]:
        if self.mode == "forward":
            return lambda: block(self._call(self.inputs))
        if self.framework == "torch":
            return self._build_torch_autograd()
        return self._build_vjp()

    def _build_vjp(self) -> Callable[[], Any]:
        """The backward through the backend contract's `vjp` (jax, numpy, and torch backends that differentiate
        inside, e.g. torch-pipeline's workers)."""
        outputs = _as_tuple(self._call(self.inputs))
        cots = self._cotangents(outputs)
        vjp = functools.partial(self.backend.vjp, self.op, self.inputs, cots, **self.options)
        if self.mode == "backward":
            return lambda: block(vjp())
        if hasattr(self.backend, "value_and_vjp"):  # jax: forward and VJP as one jitted program (a training step)
            both = functools.partial(self.backend.value_and_vjp, self.op, self.inputs, cots, **self.options)

            def step():
                outs, grads = both()
                return block(outs), block(grads)

            return step
        return lambda: (block(self._call(self.inputs)), block(vjp()))

    def _build_torch_autograd(self) -> Callable[[], Any]:
        import torch

        leaves, inputs = [], []
        for arg, a in zip(self.spec.inputs, self.inputs):
            if arg.diff and a is not None:
                a = a.detach().requires_grad_(True)
                leaves.append(a)
            inputs.append(a)
        outputs = _as_tuple(self._call(inputs))
        if not any(o.requires_grad for o in outputs):  # no autograd graph: the backend differentiates inside
            return self._build_vjp()
        cots = [c.to(o.dtype) for o, c in zip(outputs, self._cotangents(outputs))]
        if self.mode == "backward":
            return lambda: block(torch.autograd.grad(outputs, leaves, cots, retain_graph=True, allow_unused=True))

        def step():
            outs = _as_tuple(self._call(inputs))
            return block(torch.autograd.grad(outs, leaves, cots, allow_unused=True))

        return step


@functools.lru_cache(maxsize=1)
def cached_workload(backend_name: str, op: str, shape: str, dtype: str, mode: str) -> Workload:
    """asv re-runs `setup` before every timed sample; rebuilding the inputs each time would time a cold first call
    (tens of ms of allocator and thread wake-up noise on CPU), so the last workload is kept and reused."""
    return Workload(backend_name, op, shape, dtype, mode)


def op_benchmark(op: str, doc: str | None = None) -> type:
    """An asv benchmark class for spec op `op`: params backend x shape x dtype x mode; time, peak memory, GB/s and %
    of the copy bandwidth measured in the same process."""
    spec = SPEC.op(op)

    class OpBenchmark:
        params = (list(BACKENDS), list(SHAPES), list(DTYPES), list(MODES))
        param_names = ("backend", "shape", "dtype", "mode")
        timeout = 600.0
        warmup_time = 0.2
        repeat = (3, 10, 10.0)

        def setup(self, backend, shape, dtype, mode):
            self.work = cached_workload(backend, op, shape, dtype, mode)

        def time_op(self, backend, shape, dtype, mode):
            self.work.run()

        def peakmem_op(self, backend, shape, dtype, mode):
            self.work.run()

        def track_gbps(self, backend, shape, dtype, mode):
            return self.work.nbytes / median_seconds(self.work.run) / 1e9

        def track_pct_copy_bw(self, backend, shape, dtype, mode):
            w = self.work
            achieved = w.nbytes / median_seconds(w.run)
            return 100.0 * achieved / copy_bandwidth(w.backend, w.inputs[0], w.nbytes)

        if cuda_available():
            def track_gpu_peak_mib(self, backend, shape, dtype, mode):
                return gpu_peak_mib(self.work.run)

            track_gpu_peak_mib.unit = "MiB"

    OpBenchmark.track_gbps.unit = "GB/s"
    OpBenchmark.track_pct_copy_bw.unit = "% of copy bandwidth"
    name = "".join(part.capitalize() for part in op.split("_"))
    cls = type(name, (OpBenchmark,), {"__doc__": doc or f"{op} ({spec.equation}): {spec.doc}"})
    return cls


def _set_threads() -> None:
    """MHC_BENCH_THREADS=k pins torch's intra-op threads (default: the framework's own choice, all cores)."""
    threads = os.environ.get("MHC_BENCH_THREADS")
    if threads and importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(int(threads))


def _preload() -> None:
    """Load every installed backend once at import: asv forks each benchmark from a process that imported this
    module, so the forks inherit the loaded frameworks instead of importing them again (seconds each for torch).
    JAX backends are left to the forks: JAX runs threads, and a child forked after importing it deadlocks in its
    first computation (every jax benchmark hung)."""
    for name in BACKENDS:
        if "jax" in available_backends()[name].value.split(":")[0].split("."):
            continue
        try:
            get_backend(name)
        except NotImplementedError:
            pass


_set_threads()
if os.environ.get("MHC_BENCH_PRELOAD", "1") != "0":
    _preload()
