"""GPU presets: peak dense tensor throughput, memory, and what measurements achieved on them.

Every figure is per GPU as the framework sees it (an MI250/MI250X GCD is one GPU to ROCm),
dense (no 2:4 sparsity), and sourced in docs/parallelism.md ("GPU presets"). The two
efficiencies are measurements, not fits:
- `matmul_efficiency`: the maximum achievable matmul FLOPS (MAMF, torch.matmul over a
  brute-force search of shapes, S. Bekman, ml-engineering) / the dense BF16 peak;
- `hbm_efficiency`: a measured device-memory copy bandwidth / the nominal bandwidth.
A GPU with no published measurement takes the closest measured part's figure, and
`measured` says which it is.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planner.core.errors import InputError

DTYPES = ("bf16", "fp16", "fp8")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    summary: str
    bf16_tflops: float | None
    fp16_tflops: float
    fp8_tflops: float | None
    memory_GB: float
    hbm_GBps: float
    sms: int  # SMs (NVIDIA) or CUs (AMD): the wave size of a GEMM's tiles
    matmul_efficiency: float
    hbm_efficiency: float
    measured: str  # which of the two efficiencies were measured on this part, and which borrowed
    fp8_matmul_efficiency: float | None = None  # FP8 MAMF / dense FP8 peak, where measured
    scaleup_efficiency: float = 0.0  # NCCL/RCCL ring bus bandwidth / nominal, on its NVLink or xGMI

    def peak_tflops(self, dtype: str) -> float:
        """The dense peak for `dtype`; InputError when the GPU has no tensor cores for it."""
        peak = {"bf16": self.bf16_tflops, "fp16": self.fp16_tflops, "fp8": self.fp8_tflops}[dtype]
        if peak is None:
            raise InputError(f"{self.name} has no {dtype} tensor cores (use {', '.join(self.dtypes)})",
                             field="dtype")
        return peak

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(d for d in DTYPES if {"bf16": self.bf16_tflops, "fp16": self.fp16_tflops,
                                            "fp8": self.fp8_tflops}[d] is not None)


# MAMF / dense BF16 peak, ml-engineering's table (docs/parallelism.md)
MAMF_A100 = 271.2 / 312
MAMF_H100 = 794.5 / 989  # "H200 is the same"
MAMF_B200 = 1745.0 / 2250
MAMF_GB200 = 1822.0 / 2500
MAMF_MI300X = 668.4 / 1300
NVIDIA_MAMF_MEDIAN = MAMF_H100  # median of the five NVIDIA SXM rows (A100, GH200, H100, B200, GB200)
# measured copy bandwidth / nominal
FP8_MAMF = {"h100": 1402.6 / 1979, "h200": 1453.4 / 1979, "b200": 3432.5 / 4500, "gb200": 3615.6 / 5000}
HBM_A100 = 1355 / 1555
HBM_H100 = 2570 / 3350
HBM_MI308X = 4073 / 5300  # a CDNA3 part (MI300X's die, fewer CUs) reading HBM3

GPU_PRESETS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("a100-40g", "NVIDIA A100 SXM 40 GB", 312, 312, None, 40, 1555, 108, MAMF_A100, HBM_A100,
            "both measured on A100"),
    GpuSpec("a100-80g", "NVIDIA A100 SXM 80 GB", 312, 312, None, 80, 2039, 108, MAMF_A100, HBM_A100,
            "both measured on A100 (copy bandwidth on the 40 GB part)"),
    GpuSpec("h100", "NVIDIA H100 SXM5 80 GB", 989, 989, 1979, 80, 3350, 132, MAMF_H100, HBM_H100,
            "both measured on H100"),
    GpuSpec("h200", "NVIDIA H200 SXM 141 GB", 989, 989, 1979, 141, 4800, 132, MAMF_H100, HBM_H100,
            "matmul measured (same as H100); copy bandwidth H100's"),
    GpuSpec("b200", "NVIDIA B200 (HGX B200) 180 GB", 2250, 2250, 4500, 180, 8000, 148, MAMF_B200, HBM_H100,
            "matmul measured; copy bandwidth H100's"),
    GpuSpec("gb200", "NVIDIA B200 of a GB200 NVL72, 186 GB", 2500, 2500, 5000, 186, 8000, 148, MAMF_GB200, HBM_H100,
            "matmul measured; copy bandwidth H100's"),
    GpuSpec("l40s", "NVIDIA L40S 48 GB GDDR6", 362.05, 362.05, 733, 48, 864, 142, NVIDIA_MAMF_MEDIAN, HBM_H100,
            "neither measured: the NVIDIA median matmul efficiency, H100's copy bandwidth"),
    GpuSpec("mi250x", "AMD MI250X, one GCD (half a package)", 191.5, 191.5, None, 64, 1638.4, 110, MAMF_MI300X,
            HBM_MI308X, "neither measured: MI300X's matmul efficiency, a CDNA3 part's copy bandwidth"),
    GpuSpec("mi250", "AMD MI250, one GCD (half a package)", 181.05, 181.05, None, 64, 1638.4, 104, MAMF_MI300X,
            HBM_MI308X, "neither measured: MI300X's matmul efficiency, a CDNA3 part's copy bandwidth"),
    GpuSpec("mi300x", "AMD MI300X 192 GB", 1307.4, 1307.4, 2614.9, 192, 5300, 304, MAMF_MI300X, HBM_MI308X,
            "matmul measured; copy bandwidth of a CDNA3 part (MI308X)"),
    GpuSpec("v100-32g", "NVIDIA V100 SXM2 32 GB", None, 125, None, 32, 900, 80, MAMF_A100, HBM_A100,
            "neither measured: A100's"),
)}


# measured nccl-tests / rccl-tests ring bus bandwidth at >= 4 GB / nominal per-GPU link bandwidth
# (docs/parallelism.md): 8 x A100 231.6 / 300, 8 x H100 (H200) ring 367 / 450, 8 x MI300X 315.7 / 448
SCALEUP_A100 = 231.6 / 300
SCALEUP_H100 = 367.2 / 450
SCALEUP_MI300X = 315.7 / 448
SCALEUP = {"a100-40g": SCALEUP_A100, "a100-80g": SCALEUP_A100, "v100-32g": SCALEUP_A100, "l40s": SCALEUP_A100,
           "h100": SCALEUP_H100, "h200": SCALEUP_H100, "b200": SCALEUP_H100, "gb200": SCALEUP_H100,
           "mi250x": SCALEUP_MI300X, "mi250": SCALEUP_MI300X, "mi300x": SCALEUP_MI300X}
# multi-node all-reduce bus bandwidth / NICs x line rate: DGX A100 8 x HDR 192 / 200, H100 8 x NDR ~380 / 400
NETWORK_EFFICIENCY = (192 / 200 + 380 / 400) / 2

GPU_PRESETS = {name: replace(g, fp8_matmul_efficiency=FP8_MAMF.get(name), scaleup_efficiency=SCALEUP[name])
               for name, g in GPU_PRESETS.items()}


def gpu_spec(name: str, field: str = "model") -> GpuSpec:
    spec = GPU_PRESETS.get(name)
    if spec is None:
        raise InputError(f"unknown GPU {name!r} (known: {', '.join(GPU_PRESETS)})", field=field)
    return spec
