"""Nearest-neighbour throughput per backend, on dental-arch-like surfaces.

    python bench/bench_knn.py                       # CPU: kdtree, torch brute force, CPU-built grid kernel
    python bench/bench_knn.py --device cuda         # GPU: grid kernel vs pytorch3d vs torch brute, batch sweep
    python bench/bench_knn.py --sweep-cells         # CPU kernel speed vs grid density (cells per point)

Queries are a second sampling of the same surface, moved by a small rigid motion (the situation of
an ICP iteration). Every result is checked against the first backend's distances.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: fair CPU times on a shared box

from occlutrace_compute.nn import knn
from occlutrace_compute.nn.grid_build import DEFAULT_CELLS_PER_POINT


def arch_surface(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3) float32 points on a horseshoe-shaped, tooth-bumped surface about 50 x 30 x 10 mm."""
    s, t = (
        torch.rand(n, generator=generator, dtype=torch.float64),
        torch.rand(n, generator=generator, dtype=torch.float64),
    )
    a = 2.0 * s - 1.0
    centre = torch.stack([25.0 * a, 30.0 * (1.0 - a**2)], dim=1)
    tangent = torch.stack([torch.full_like(a, 25.0), -60.0 * a], dim=1)
    normal = torch.stack([-tangent[:, 1], tangent[:, 0]], dim=1) / tangent.norm(dim=1, keepdim=True)
    theta = math.pi * t
    bumps = 1.5 * torch.sin(2 * math.pi * 14 * s).abs() * torch.sin(theta) ** 4
    xy = centre + 5.0 * torch.cos(theta)[:, None] * normal
    z = (8.0 + bumps) * torch.sin(theta)
    return torch.cat([xy, z[:, None]], dim=1).float()


def make_inputs(batch: int, n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    refs = torch.stack([arch_surface(n, g) for _ in range(batch)])
    angle = math.radians(1.0)
    rot = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    queries = torch.stack([arch_surface(n, g) for _ in range(batch)]) @ rot.T + torch.tensor([0.2, -0.1, 0.1])
    return queries.to(device), refs.to(device)


def timed(fn, device: str, repeats: int) -> tuple[tuple[float, float], object]:
    """Best wall time and best process CPU time (all threads) of `repeats` runs, after one warm-up
    run that also compiles kernels. On a shared CPU the CPU time is the steadier figure."""
    out = fn()
    wall = cpu = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return (wall, cpu), out


def report(label: str, n_queries: int, seconds: tuple[float, float], result, baseline) -> None:
    wall, cpu = seconds
    agree = "reference"
    if baseline is not None:
        diff = (result.dists2.double() - baseline.dists2.double()).abs().max().item()
        agree = f"max |d2 - first| = {diff:.1e} mm^2"
    print(
        f"  {label:<28} wall {wall * 1e3:9.1f} ms {n_queries / wall / 1e6:7.2f} Mq/s | "
        f"cpu {cpu * 1e3:9.1f} ms {n_queries / max(cpu, 1e-9) / 1e6:7.2f} Mq/cpu-s | {agree}",
        flush=True,
    )


def bench_cpu(args) -> None:
    from occlutrace_compute.nn.grid_cpu import CpuGridKnn, compile_library

    if args.threads:
        torch.set_num_threads(args.threads)
    kernel = CpuGridKnn(compile_library(Path(tempfile.mkdtemp(prefix="grid_knn_"))), threads=args.threads)
    print(
        f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, k={args.k}"
    )
    for n in args.sizes:
        q, r = make_inputs(1, n, seed=n, device="cpu")
        lq, lr = torch.tensor([n]), torch.tensor([n])
        print(f"{n} x {n} points")
        t, base = timed(functools.partial(knn, q, r, k=args.k, backend="kdtree"), "cpu", args.repeats)
        report("kdtree (scipy, workers=-1)", n, t, base, None)
        if n <= args.max_brute_cpu:
            t, res = timed(functools.partial(knn, q, r, k=args.k, backend="torch"), "cpu", args.repeats)
            report("torch brute force", n, t, res, base)
        else:
            print(f"  {'torch brute force':<26} skipped above {args.max_brute_cpu} points (--max-brute-cpu)")
        for cpp in args.cells if args.sweep_cells else [DEFAULT_CELLS_PER_POINT]:
            t, res = timed(functools.partial(kernel, q, r, lq, lr, args.k, cpp), "cpu", args.repeats)
            report(f"grid kernel, CPU ({cpp:g} c/pt)", n, t, res, base)


def bench_cuda(args) -> None:
    from occlutrace_compute.nn import available_backends

    backends = available_backends("cuda")
    print(f"GPU {torch.cuda.get_device_name()}, k={args.k}, backends {backends}")
    for n in args.sizes:
        for b in args.batches:
            q, r = make_inputs(b, n, seed=n + b, device="cuda")
            print(f"batch {b} x ({n} x {n} points)")
            base = None
            for name in backends:
                if name == "torch" and b * n * n > args.max_brute_pairs:
                    print(
                        f"  {'torch brute force':<26} skipped above {args.max_brute_pairs:.0e} pairs (--max-brute-pairs)"
                    )
                    continue
                t, res = timed(functools.partial(knn, q, r, k=args.k, backend=name), "cuda", args.repeats)
                report(name, b * n, t, res, base)
                base = base if base is not None else res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 150_000], help="points per cloud")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="GPU batch sizes")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-brute-cpu", type=int, default=30_000, help="largest cloud for torch brute force on CPU")
    parser.add_argument("--max-brute-pairs", type=float, default=2e11, help="largest batch*P*R for GPU brute force")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the CPU kernel (kdtree uses all)")
    parser.add_argument("--sweep-cells", action="store_true", help="CPU kernel at several grid densities")
    parser.add_argument("--cells", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4, 8, 16])
    args = parser.parse_args()
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA GPU visible to torch")
        bench_cuda(args)
    else:
        bench_cpu(args)


if __name__ == "__main__":
    main()
