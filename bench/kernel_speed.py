"""Kernel benchmark: fused log-prob + entropy against materialised logits, GAE against a per-timestep loop.

Usage: ``python bench/kernel_speed.py [--json PATH] [--repeats R] [--threads K] [--skip-logprob]``

CPU part (always):
- Fused linear log-prob + entropy, forward + backward w.r.t. hidden and weight, at N=4096, H=1024,
  V=151936 in float32, through ``linear_logprob_entropy`` (dispatch picks the chunked torch path on
  CPU) against the naive path that materialises the ``[N, V]`` logits and lets autograd do the rest.
  Each variant runs in its own fresh subprocess, so its memory is measured in isolation: the figure is
  the process's peak resident set (``ru_maxrss``) minus its current resident set right after the inputs
  were built (in place, so no temporary pushed the peak above it; checked), i.e. everything the forward
  and backward allocate on top of their inputs, the gradients of hidden and weight included (torch's
  CPU allocator returns large blocks to the OS, so RSS follows what is held). Time is the wall time
  of forward + backward inside the subprocess. The two variants alternate ``--repeats`` times and
  medians are reported. ``--threads`` sets torch's intra-op threads everywhere: with another job on
  the cores, 2 threads stall on each other (measured here: GAE 7.9 ms with 1 thread, 283 ms with 2).
- GAE at B=64, T=4096 (random loss mask, masked tokens transparent) through ``gae`` against the usual
  Python loop over T (vectorised over B), which is what public trainers do; both results are checked
  against each other first.

GPU part (only when CUDA is available, otherwise a note is printed): achieved TFLOP/s of the fused
op's forward + backward (6 N H V flops) in bfloat16 against a measured bfloat16 matmul of the same
size, and GAE's GB/s (17 bytes per token: reward, value, mask in; advantage, return out) against a
measured device-to-device copy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from turnrl.kernels import gae, linear_logprob_entropy

SHAPE = {"n": 4096, "h": 1024, "v": 151936}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def naive_logprob_entropy(hidden, weight, targets, temperature: float):
    log_probs = torch.log_softmax((hidden @ weight.t()).float() / temperature, dim=-1)
    logp = log_probs.gather(1, targets[:, None]).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logp, entropy


def logprob_child(variant: str, threads: int, n: int, h: int, v: int) -> dict:
    """One fwd+bwd of one variant in this (fresh) process: wall time and memory above the inputs."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g).mul_(0.5).requires_grad_()  # in place: no temporary raises the peak
    weight = torch.randn(v, h, generator=g).mul_(0.05).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    g_logp, g_ent = torch.randn(n, generator=g), torch.randn(n, generator=g)
    base, peak_before = _current_rss_mb(), _peak_rss_mb()
    if peak_before > base + 64:
        raise RuntimeError(f"the peak before the op ({peak_before:.0f} MB) would hide the op's own peak")
    start = time.perf_counter()
    if variant == "naive":
        logp, entropy = naive_logprob_entropy(hidden, weight, targets, 1.0)
    else:
        logp, entropy = linear_logprob_entropy(hidden, weight, targets, 1.0)
    torch.autograd.backward((logp, entropy), (g_logp, g_ent))
    seconds = time.perf_counter() - start
    checksum = [float(logp.sum()), float(entropy.sum()), float(hidden.grad.norm()), float(weight.grad.norm())]
    return {
        "variant": variant,
        "seconds": seconds,
        "peak_above_inputs_mb": _peak_rss_mb() - base,
        "inputs_rss_mb": base,
        "checksum": checksum,
    }


def bench_logprob(repeats: int, threads: int, shape: dict) -> dict:
    runs: dict[str, list[dict]] = {"naive": [], "fused": []}
    for _ in range(repeats):
        for variant in runs:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                variant,
                f"--threads={threads}",
                *(f"--{k}={val}" for k, val in shape.items()),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    naive, fused = runs["naive"][0]["checksum"], runs["fused"][0]["checksum"]
    for a, b in zip(naive, fused, strict=True):
        if abs(a - b) > 1e-3 * max(1.0, abs(a)):
            raise RuntimeError(f"fused and naive disagree: {naive} vs {fused}")

    def med(variant, key):
        return statistics.median(r[key] for r in runs[variant])

    return {
        **{f"logprob_{k}": val for k, val in shape.items()},
        "logprob_naive_seconds": med("naive", "seconds"),
        "logprob_fused_seconds": med("fused", "seconds"),
        "logprob_naive_peak_mb": med("naive", "peak_above_inputs_mb"),
        "logprob_fused_peak_mb": med("fused", "peak_above_inputs_mb"),
        "logprob_peak_mem_ratio": med("naive", "peak_above_inputs_mb") / med("fused", "peak_above_inputs_mb"),
        "logprob_time_ratio": med("fused", "seconds") / med("naive", "seconds"),
        "logprob_repeats": repeats,
    }


def gae_loop(rewards, values, mask, gamma: float, lam: float):
    """Per-timestep loop over T, vectorised over rows; masked tokens pass value and advantage through."""
    keep = mask.float()
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0])
    running = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        new_running = delta + gamma * lam * running
        running = keep[:, t] * new_running + (1 - keep[:, t]) * running
        next_value = keep[:, t] * values[:, t] + (1 - keep[:, t]) * next_value
        adv[:, t] = keep[:, t] * running
    return adv, (adv + values) * keep


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_gae(repeats: int, rows: int = 64, steps: int = 4096) -> dict:
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(rows, steps, generator=g), torch.randn(rows, steps, generator=g)
    mask = torch.rand(rows, steps, generator=g) > 0.3
    ours, loop = gae(rewards, values, mask, 0.99, 0.95), gae_loop(rewards, values, mask, 0.99, 0.95)
    for a, b in zip(ours, loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    loop_s, ours_s = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        loop_s.append(_median_seconds(lambda: gae_loop(rewards, values, mask, 0.99, 0.95), 1))
        ours_s.append(_median_seconds(lambda: gae(rewards, values, mask, 0.99, 0.95), 3))
    loop_t, ours_t = statistics.median(loop_s), statistics.median(ours_s)
    return {
        "gae_rows": rows,
        "gae_steps": steps,
        "gae_loop_ms": loop_t * 1e3,
        "gae_ms": ours_t * 1e3,
        "gae_speedup_vs_loop": loop_t / ours_t,
    }


def bench_gpu(shape: dict) -> dict:
    from triton.testing import do_bench as triton_do_bench

    def do_bench(fn):
        return triton_do_bench(fn, return_mode="median")

    n, h, v = shape["n"], shape["h"], shape["v"]
    dev = torch.device("cuda")
    a = torch.randn(n, h, device=dev, dtype=torch.bfloat16)
    w = torch.randn(v, h, device=dev, dtype=torch.bfloat16) * 0.05
    matmul_ms = do_bench(lambda: a @ w.t())
    matmul_tflops = 2 * n * h * v / matmul_ms / 1e9
    hidden, weight = a.clone().requires_grad_(), w.clone().requires_grad_()
    targets = torch.randint(0, v, (n,), device=dev)
    g_logp, g_ent = torch.randn(n, device=dev), torch.randn(n, device=dev)

    def fused():
        hidden.grad = weight.grad = None
        logp, entropy = linear_logprob_entropy(hidden, weight, targets, check_finite=False)
        torch.autograd.backward((logp, entropy), (g_logp, g_ent))

    fused_ms = do_bench(fused)
    fused_tflops = 6 * n * h * v / fused_ms / 1e9

    rows, steps = 64, 4096
    rewards, values = torch.randn(rows, steps, device=dev), torch.randn(rows, steps, device=dev)
    mask = torch.rand(rows, steps, device=dev) > 0.3
    gae_ms = do_bench(lambda: gae(rewards, values, mask, 0.99, 0.95, check_finite=False))
    gae_gbs = rows * steps * 17 / gae_ms / 1e6
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
    copy = torch.empty_like(big)
    copy_ms = do_bench(lambda: copy.copy_(big))
    copy_gbs = 2 * big.numel() / copy_ms / 1e6
    return {
        "gpu_name": torch.cuda.get_device_name(),
        "gpu_matmul_bf16_tflops": matmul_tflops,
        "gpu_logprob_fwd_bwd_tflops": fused_tflops,
        "gpu_logprob_fraction_of_matmul": fused_tflops / matmul_tflops,
        "gpu_gae_gbs": gae_gbs,
        "gpu_copy_gbs": copy_gbs,
        "gpu_gae_fraction_of_copy": gae_gbs / copy_gbs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this path")
    parser.add_argument("--repeats", type=int, default=1, help="naive/fused log-prob pairs to run (each is slow)")
    parser.add_argument("--gae-repeats", type=int, default=7)
    parser.add_argument("--skip-logprob", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads for every CPU figure (use 1 when another job shares the cores)",
    )
    parser.add_argument("--child", choices=["naive", "fused"], help=argparse.SUPPRESS)
    for key, val in SHAPE.items():
        parser.add_argument(f"--{key}", type=int, default=val)
    args = parser.parse_args()
    shape = {k: getattr(args, k) for k in SHAPE}
    if args.child:
        print(json.dumps(logprob_child(args.child, args.threads, **shape)))
        return
    torch.set_num_threads(args.threads)
    results: dict = {"torch": torch.__version__, "threads": args.threads}
    if not args.skip_logprob:
        results.update(bench_logprob(args.repeats, args.threads, shape))
    results.update(bench_gae(args.gae_repeats))
    if torch.cuda.is_available():
        results.update(bench_gpu(shape))
    else:
        print("note: CUDA is not available, GPU figures (TFLOP/s vs matmul, GB/s vs copy) skipped")
    width = max(map(len, results))
    for key, val in results.items():
        print(f"{key:<{width}}  {val:.4g}" if isinstance(val, float) else f"{key:<{width}}  {val}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
