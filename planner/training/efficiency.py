"""Achieved speed of one kernel on one GPU: a GEMM by its shape, a memory-bound op by its bytes.

GEMM: time = max(FLOPs / (peak x measured matmul efficiency x tile utilisation),
bytes moved / achieved HBM bandwidth). Tile utilisation is the wave and tile
quantisation of NVIDIA's "Matrix Multiplication Background" guide: the output is cut into
128 x 128 tiles, one per SM per wave, so a GEMM whose tiles fill k waves of SMs and a bit
runs the last wave mostly idle, and a dimension not a multiple of 128 pays for the
padded tile. The measured matmul efficiency (MAMF) is taken at shapes that fill whole
waves, so it is the ceiling this utilisation multiplies. Memory-bound ops (norms,
activations, dropout, softmax, the optimizer) run at the measured copy bandwidth.
Both efficiencies are measurements named in planner/core/gpus.py. One constant is
calibrated: SUSTAINED, the fraction of those microbenchmark speeds kernels keep inside a
training step (clocks under sustained power, caches shared with neighbours, epilogues),
from the per-layer timings of Korthikanti et al. 2022, Table 4 (one GPT layer, five
settings, planner/training/calibration.py re-derives it); the end-to-end tables it is
checked against (bench/parallelism.py) are not used.
"""
from __future__ import annotations

import math

from planner.core.gpus import GpuSpec

TILE = 128
SUSTAINED = 0.918  # planner.training.calibration.sustained_fraction() re-derives it


def tile_utilisation(gpu: GpuSpec, m: int, n: int, batch: int = 1) -> float:
    """Useful output elements / the elements the SM waves could have computed. An output of
    fewer tiles than SMs is split along k over the idle SMs (split-K, what cuBLAS and CUTLASS
    do for small outputs such as a decode step's), so only its tile padding is lost."""
    tiles = math.ceil(m / TILE) * math.ceil(n / TILE) * batch
    if tiles < gpu.sms:
        return (m * n * batch) / (tiles * TILE * TILE)
    waves = math.ceil(tiles / gpu.sms)
    return (m * n * batch) / (waves * gpu.sms * TILE * TILE)


def gemm_seconds(gpu: GpuSpec, dtype: str, m: int, n: int, k: int, batch: int = 1, element_bytes: int = 2) -> float:
    """[m, k] x [k, n] (`batch` of them) at the GPU's achieved speed for `dtype`."""
    if m <= 0 or n <= 0 or k <= 0 or batch <= 0:
        return 0.0
    flops = 2.0 * m * n * k * batch
    rate = matmul_rate(gpu, dtype) * tile_utilisation(gpu, m, n, batch)
    moved = element_bytes * (m * k + k * n + m * n) * batch
    return max(flops / rate, memory_seconds(gpu, moved))


def matmul_rate(gpu: GpuSpec, dtype: str) -> float:
    """FLOP/s of a matmul that fills whole waves, in a training step."""
    efficiency = gpu.fp8_matmul_efficiency if dtype == "fp8" and gpu.fp8_matmul_efficiency else gpu.matmul_efficiency
    return gpu.peak_tflops(dtype) * 1e12 * efficiency * SUSTAINED


def memory_seconds(gpu: GpuSpec, moved_bytes: float) -> float:
    """Bytes read plus written by a memory-bound kernel, at the achieved HBM bandwidth."""
    return moved_bytes / (gpu.hbm_GBps * 1e9 * gpu.hbm_efficiency * SUSTAINED)
