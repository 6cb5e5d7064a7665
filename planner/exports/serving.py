"""Launch commands of a serving plan, one per replica, for vLLM or SGLang, and their reader.

The script is a shell file: for each replica a comment `# replica K: <gpu> <role>
rate_rps=<r> gpus=<ids>` and its command, run on the first server of the replica
(`server<N>` stands for that host). The engines read the parallelism from their own flags:
- vLLM (`vllm serve`): --tensor-parallel-size, --pipeline-parallel-size (stages on other
  servers: --distributed-executor-backend ray over a Ray cluster of those servers),
  --enable-expert-parallel, --kv-transfer-config with kv_role kv_producer (prefill) or
  kv_consumer (decode) for disaggregation (P2pNcclConnector, registering with vLLM's P2P
  NCCL proxy on the host `router`), --max-num-seqs,
  --max-num-batched-tokens and --enable-chunked-prefill, --gpu-memory-utilization;
- SGLang (`python -m sglang.launch_server`): --tp-size, --pp-size, --ep-size,
  --disaggregation-mode prefill|decode, --max-running-requests, --chunked-prefill-size
  (-1: off), --mem-fraction-static, --nnodes for stages on other servers.
The router's weights (each entry replica's share of requests; each decode replica's
share of the decodes) close the file, with the SGLang router command for disaggregation.
`parse_engine_script` reads the replicas back from the flags, the comments and
CUDA_VISIBLE_DEVICES (what a launcher would run).
"""
from __future__ import annotations

import json
import re
import shlex

from planner.core.errors import InputError
from planner.core.serving import ReplicaConfig, ServeWorkload
from planner.core.transformer import TransformerSpec
from planner.serving.setup import PlacedReplica

BASE_PORT = 8000
KV_BASE_PORT = 21001  # P2pNcclConnector's kv_port, one per replica (vLLM's xPyD example numbering)
PROXY_PORT = 30001
ENGINES = ("vllm", "sglang")
_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16"}


def model_id(spec: TransformerSpec) -> str:
    """The Hugging Face repository the preset comes from, else the model's name."""
    m = re.match(r"https://huggingface\.co/([^/]+/[^/]+)", spec.source or "")
    return m.group(1) if m else spec.name


def _server(gpu: str) -> str:
    return "server" + gpu.split("/", 1)[0]


def _local(gpu: str) -> str:
    return re.sub(r"\D", "", gpu.split("/", 1)[-1]) or "0"


def _command(spec: TransformerSpec, w: ServeWorkload, r: PlacedReplica, port: int, engine: str,
             index: int) -> list[str]:
    c = r.config
    servers = sorted({_server(g) for g in r.gpus}, key=lambda s: int(s[6:]) if s[6:].isdigit() else 0)
    if engine == "vllm":
        cmd = ["vllm", "serve", model_id(spec), "--tensor-parallel-size", str(c.tp), "--pipeline-parallel-size",
               str(c.pp), "--dtype", _TORCH_DTYPE[w.dtype]]
        if c.ep:
            cmd.append("--enable-expert-parallel")
        if w.dtype == "fp8":
            cmd += ["--quantization", "fp8"]
        if w.kv_dtype == "fp8":
            cmd += ["--kv-cache-dtype", "fp8"]
        cmd += ["--max-num-seqs", str(w.max_batch), "--gpu-memory-utilization", f"{w.memory_utilization:g}"]
        if w.chunk_tokens:
            cmd += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(w.chunk_tokens)]
        else:
            cmd += ["--no-enable-chunked-prefill"]
        if len(servers) > 1:
            cmd += ["--distributed-executor-backend", "ray"]
        if c.role != "colocated":
            role = "kv_producer" if c.role == "prefill" else "kv_consumer"
            config = {"kv_connector": "P2pNcclConnector", "kv_role": role, "kv_port": str(KV_BASE_PORT + index),
                      "kv_connector_extra_config": {"proxy_ip": "router", "proxy_port": str(PROXY_PORT),
                                                    "http_port": str(port)}}
            cmd += ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
        cmd += ["--port", str(port)]
    else:
        cmd = ["python", "-m", "sglang.launch_server", "--model-path", model_id(spec), "--tp-size", str(c.tp),
               "--pp-size", str(c.pp), "--dtype", _TORCH_DTYPE[w.dtype]]
        if c.ep:
            cmd += ["--ep-size", str(c.tp)]
        if w.dtype == "fp8":
            cmd += ["--quantization", "fp8"]
        if w.kv_dtype == "fp8":
            cmd += ["--kv-cache-dtype", "fp8_e4m3"]
        cmd += ["--max-running-requests", str(w.max_batch), "--chunked-prefill-size", str(w.chunk_tokens or -1),
                "--mem-fraction-static", f"{w.memory_utilization:g}"]
        if len(servers) > 1:
            cmd += ["--nnodes", str(len(servers)), "--node-rank", "0", "--dist-init-addr", f"{servers[0]}:5000"]
        if c.role != "colocated":
            cmd += ["--disaggregation-mode", c.role]
        cmd += ["--host", "0.0.0.0", "--port", str(port)]
    visible = ",".join(_local(g) for g in r.gpus if _server(g) == servers[0])
    return [f"CUDA_VISIBLE_DEVICES={visible}"] + cmd


def engine_script(spec: TransformerSpec, w: ServeWorkload, replicas: tuple[PlacedReplica, ...], engine: str) -> str:
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (use {' | '.join(ENGINES)})", field="--export")
    lines = [f"# planner serving plan for {engine}: {model_id(spec)}, {len(replicas)} replicas",
             "# each command runs on the first server of its replica (serverN is that host)"]
    ports: dict[str, int] = {}
    urls = []
    for k, r in enumerate(replicas):
        first = _server(r.gpus[0])
        port = ports[first] = ports.get(first, BASE_PORT - 1) + 1
        urls.append((r.config.role, f"http://{first}:{port}", r.rate_rps))
        lines.append(f"# replica {k}: {r.config.gpu} {r.config.role} rate_rps={r.rate_rps!r} gpus={','.join(r.gpus)}")
        lines.append(" ".join(shlex.quote(x) if i else x for i, x in enumerate(_command(spec, w, r, port, engine, k))))
    entry = {u: rate for role, u, rate in urls if role != "decode"}
    decode = {u: rate for role, u, rate in urls if role == "decode"}
    total_e, total_d = sum(entry.values()) or 1.0, sum(decode.values()) or 1.0
    lines.append("# router weights (share of requests): "
                 + json.dumps({"entry": {u: v / total_e for u, v in entry.items()},
                               "decode": {u: v / total_d for u, v in decode.items()}}, sort_keys=True))
    if engine == "sglang" and decode:
        lines.append("python -m sglang_router.launch_router --pd-disaggregation "
                     + " ".join(f"--prefill {u}" for u in entry) + " " + " ".join(f"--decode {u}" for u in decode))
    if engine == "vllm" and decode:
        lines.append(f"# on the host `router`: vLLM's P2P NCCL proxy (examples/online_serving/"
                     f"disaggregated_serving_p2p_nccl_xpyd/disagg_proxy_p2p_nccl_xpyd.py), listening on {PROXY_PORT} "
                     "for the prefill and decode instances, which register with it")
    return "\n".join(lines) + "\n"


_REPLICA = re.compile(r"^# replica (\d+): (\S+) (colocated|prefill|decode) rate_rps=(\S+) gpus=(\S+)$")


def parse_engine_script(text: str, engine: str) -> tuple[PlacedReplica, ...]:
    """The replicas a script launches: parallelism and role from the engine's flags, the GPU
    type, traffic and GPU ids from the replica comment, checked against CUDA_VISIBLE_DEVICES."""
    out: list[PlacedReplica] = []
    pending = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _REPLICA.match(line)
        if m:
            pending = (m.group(2), float(m.group(4)), tuple(m.group(5).split(",")), m.group(3))
            continue
        if line.startswith("#") or not line.strip() or pending is None:
            continue
        words = shlex.split(line)
        if not words[0].startswith("CUDA_VISIBLE_DEVICES="):
            continue
        gpu, rate, gpus, comment_role = pending
        pending = None
        flags = _flags(words[1:])
        try:
            if engine == "vllm":
                tp, pp = int(flags["--tensor-parallel-size"]), int(flags["--pipeline-parallel-size"])
                ep = "--enable-expert-parallel" in flags
                role = "colocated"
                if "--kv-transfer-config" in flags:
                    kv = json.loads(flags["--kv-transfer-config"])["kv_role"]
                    role = {"kv_producer": "prefill", "kv_consumer": "decode"}[kv]
            else:
                tp, pp = int(flags["--tp-size"]), int(flags["--pp-size"])
                ep = "--ep-size" in flags
                role = flags.get("--disaggregation-mode", "colocated")
        except (KeyError, ValueError) as exc:
            raise InputError(f"line {number}: cannot read the replica's parallelism ({exc})", field="export") from None
        visible = words[0].split("=", 1)[1].split(",")
        first = [g for g in gpus if _server(g) == _server(gpus[0])]
        if visible != [_local(g) for g in first]:
            raise InputError(f"line {number}: CUDA_VISIBLE_DEVICES does not name the replica's GPUs", field="export")
        if role != comment_role:
            raise InputError(f"line {number}: the flags say {role}, the comment {comment_role}", field="export")
        out.append(PlacedReplica(ReplicaConfig(gpu, tp, pp, ep, role), gpus, rate))
    return tuple(out)


def _flags(words: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                out[w] = words[i + 1]
                i += 2
                continue
            out[w] = ""
        i += 1
    return out
