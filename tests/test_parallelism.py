"""Training parallelism plans: the published formulas the cost model must reproduce, the
calibration it must re-derive, what divides, and the command line's bad-input paths.
(Every method of the kind also goes through tests/kind_checks.py via tests/test_kinds.py.)"""
from __future__ import annotations

import json

import pytest
import yaml

from kind_checks import parallelism_problems
from planner.core.errors import InputError
from planner.core.training import ParallelConfig, TrainWorkload, parse_fix, parse_workload
from planner.core.transformer import MODEL_PRESETS, parse_model
from planner.exports.megatron import megatron_text, parse_megatron
from planner.kinds.parallelism import plan_training
from planner.training import efficiency
from planner.training.calibration import narayanan_flops, sustained_fraction
from planner.training.comm import group_ranks
from planner.training.layer import _activation_bytes
from planner.training.space import stage_split, why_invalid
from topologies.fabrics import cluster
from topologies.io import parse_topology, topology_to_dict

GPT = MODEL_PRESETS["megatron-22b"]  # MHA, GELU 4h, dropout: the model of Korthikanti et al.'s formulas


@pytest.mark.parametrize("t", [1, 2, 8])
@pytest.mark.parametrize("recompute, sp", [("none", False), ("none", True), ("selective", False), ("selective", True)])
def test_activation_memory_is_korthikanti_table_2(t, recompute, sp):
    s, b, h, a = 2048, 4, GPT.hidden, GPT.heads
    w = TrainWorkload(b, s, attention="unfused")
    c = ParallelConfig(tp=t, micro_batch=b, recompute=recompute, sequence_parallel=sp and t > 1)
    got = _activation_bytes(GPT, w, c, b * s, moe=False, keep_square=recompute == "none")
    square = 5 * a * s / (h * t) if recompute == "none" else 0.0
    expected = s * b * h * ((34 / t if sp and t > 1 else 10 + 24 / t) + square)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t, sp", [(1, False), (8, False), (8, True)])
def test_full_recompute_keeps_the_layer_input(t, sp):
    """Korthikanti et al. Table 2, full recompute: 2sbh (the input, sharded with sequence parallelism)."""
    from planner.training.layer import activation_footprint

    s, b, h = 2048, 4, GPT.hidden
    c = ParallelConfig(tp=t, micro_batch=b, recompute="full", sequence_parallel=sp)
    kept, _ = activation_footprint(GPT, TrainWorkload(b, s, attention="unfused"), c, moe=False)
    assert kept == 2 * s * b * h / (t if sp else 1)


def test_model_flops_are_narayanans_without_the_recompute_pass():
    for name in ("megatron-1.7b", "megatron-530b", "gpt3-175b"):
        spec = MODEL_PRESETS[name]
        batch, seq = 8, 2048
        assert spec.model_flops(batch * seq, seq) == pytest.approx(narayanan_flops(spec, batch, seq) * 72 / 96
                                                                   * _logits_share(spec, seq), rel=1e-12)


def _logits_share(spec, seq):
    """Narayanan's 96 counts the logits 3x of 4: 72 (1 + s/6h + V/12lh) over 72 (1 + s/6h + V/16lh) x 96/72."""
    h, l, v = spec.hidden, spec.layers, spec.vocab
    return (1 + seq / (6 * h) + v / (12 * l * h)) / (1 + seq / (6 * h) + v / (16 * l * h))


@pytest.mark.parametrize("name, billions, active", [
    ("llama3-8b", 8.03, None), ("llama3-70b", 70.55, None), ("llama3-405b", 405.9, None),
    ("mixtral-8x7b", 46.7, 12.9), ("mixtral-8x22b", 140.6, 39.1), ("deepseek-v3", 671.0, 37.5)])
def test_preset_parameter_counts_match_the_published(name, billions, active):
    spec = MODEL_PRESETS[name]
    assert spec.params / 1e9 == pytest.approx(billions, rel=0.01)
    if active is not None:
        assert spec.active_params / 1e9 == pytest.approx(active, rel=0.02)


def test_the_calibrated_constant_is_what_table_4_gives():
    assert sustained_fraction() == pytest.approx(efficiency.SUSTAINED, abs=2e-3)


def test_ranks_follow_megatrons_order():
    sizes = {"tp": 2, "cp": 2, "ep": 1, "edp": 2, "pp": 2}
    assert group_ranks(sizes, "tp") == (0, 1)
    assert group_ranks(sizes, "cp") == (0, 2)
    assert group_ranks(sizes, "dp") == (0, 2, 4, 6)  # cp and dp: the dense gradients' group
    assert group_ranks(sizes, "pp") == (0, 8)


def test_uneven_stages_follow_megatrons_first_and_last():
    assert stage_split(126, 16) == (7, *[8] * 14, 7)
    assert stage_split(80, 8) is None  # even
    assert stage_split(7, 2) is None  # two stages have no middle


@pytest.mark.parametrize("config", [
    ParallelConfig(tp=8, pp=8, dp=1, micro_batch=1, interleave=2, recompute="selective", sequence_parallel=True),
    ParallelConfig(tp=8, pp=16, dp=1, recompute="full", layers_per_stage=(7, *[8] * 14, 7)),
    ParallelConfig(tp=4, pp=4, dp=4, cp=1, layers_per_stage=(19, 21, 21, 19), distributed_optimizer=True),
    ParallelConfig(tp=2, pp=2, dp=8, cp=2, micro_batch=2)])
def test_megatron_arguments_read_back_to_the_configuration(config):
    spec = MODEL_PRESETS["llama3-405b"] if config.pp == 16 else MODEL_PRESETS["llama3-70b"]
    text = megatron_text(spec, TrainWorkload(64, 8192), config)
    assert parse_megatron(text, spec.layers, config.gpus) == config


def test_the_export_builds_the_model_priced():
    spec = MODEL_PRESETS["deepseek-v3"]
    text = megatron_text(spec, TrainWorkload(64, 4096), ParallelConfig(pp=16, dp=16, ep=16,
                                                                       layers_per_stage=(2, *[4] * 14, 3)))
    for flag in ("--multi-latent-attention", "--kv-lora-rank 512", "--moe-shared-expert-intermediate-size 2048",
                 "--moe-layer-freq '([0]*3+[1]*58)'", "--hidden-dropout 0", "--decoder-first-pipeline-num-layers 2"):
        assert flag in text, flag
    assert "--untie-embeddings-and-output-weights" not in megatron_text(GPT, TrainWorkload(8, 2048), ParallelConfig())


def test_a_stage_of_two_gpu_types_runs_as_the_least_of_each():
    from planner.training.cost import weakest
    from planner.core.gpus import GPU_PRESETS

    both = weakest({GPU_PRESETS["a100-80g"], GPU_PRESETS["l40s"]})
    assert both.memory_GB == 48 and both.hbm_GBps == pytest.approx(864 * GPU_PRESETS["l40s"].hbm_efficiency)
    assert both.bf16_tflops == 312


def test_even_split_is_the_default_split():
    assert ParallelConfig(pp=4, layers_per_stage=(20, 20, 20, 20)).layers_per_stage is None


def test_what_does_not_divide_names_the_field():
    w = TrainWorkload(1024, 8192)
    spec = MODEL_PRESETS["llama3-70b"]
    assert why_invalid(spec, w, 64, ParallelConfig(tp=16, dp=4))[0] == "tp"  # 8 K/V heads
    assert why_invalid(spec, w, 64, ParallelConfig(tp=8, pp=8, interleave=3))[0] == "interleave"
    assert why_invalid(spec, w, 64, ParallelConfig(tp=8, dp=8, micro_batch=3))[0] == "micro_batch"
    assert why_invalid(spec, w, 64, ParallelConfig(tp=8, dp=8, ep=2))[0] == "ep"
    assert why_invalid(spec, w, 64, ParallelConfig(tp=8, pp=2, dp=4)) is None
    moe = MODEL_PRESETS["mixtral-8x7b"]
    assert why_invalid(moe, w, 64, ParallelConfig(tp=2, dp=32, ep=2))[0] == "sequence_parallel"
    assert why_invalid(spec, TrainWorkload(8, 127), 8, ParallelConfig(tp=2, dp=4, sequence_parallel=True))[0] \
        == "sequence_parallel"
    deep = MODEL_PRESETS["deepseek-v3"]  # 61 layers: pp 16 only with the uneven split named
    assert why_invalid(deep, w, 256, ParallelConfig(tp=1, pp=16, dp=16, ep=16, sequence_parallel=False))[0] == "pp"


def test_the_stage_milp_splits_a_mixed_cluster_unevenly_and_beats_the_even_split():
    problem = parallelism_problems()[2]  # an H100 server and an A100 server, pp 2
    doc = plan_training(problem, "milp", time_limit_s=5).plan.to_json()
    stages = doc["plan"]["layers_per_stage"]
    assert stages[0] > stages[1]  # the H100 stage takes more layers
    assert doc["metrics"]["step_time_s"] < doc["metrics"]["default_split_step_time_s"]
    assert doc["metrics"]["mfu"] <= 1
    assert doc["solver"]["status"] == "optimal"


def test_the_same_problem_gives_the_same_bytes():
    first = plan_training(parallelism_problems()[0]).plan.to_json(reproducible=True)
    again = plan_training(parallelism_problems()[0]).plan.to_json(reproducible=True)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


@pytest.mark.parametrize("text, field", [("tp=8,pp", "--fix"), ("tp=0", "--fix"), ("colour=red", "--fix"),
                                         ("recompute=some", "--fix"), ("sequence_parallel=2", "--fix")])
def test_bad_fix_is_bad_input(text, field):
    with pytest.raises(InputError) as err:
        parse_fix(text)
    assert err.value.field == field


@pytest.mark.parametrize("doc, field", [
    ({"name": "m", "layers": 4, "hidden": 64, "ffn_hidden": 256, "heads": 4, "colour": 1}, "colour"),
    ({"name": "m", "layers": 4, "hidden": 64, "ffn_hidden": 256, "heads": 4, "kv_heads": 3}, "kv_heads"),
    ({"name": "m", "layers": 0, "hidden": 64, "ffn_hidden": 256, "heads": 4}, "layers"),
    ({"name": "m", "layers": 4, "hidden": 64, "ffn_hidden": 256, "heads": 4, "mlp": "relu"}, "mlp"),
    ({"name": "m", "layers": 4, "hidden": 64, "ffn_hidden": 256, "heads": 4, "experts": 8}, "top_k")])
def test_bad_model_files_name_the_field(doc, field):
    with pytest.raises(InputError) as err:
        parse_model(doc, "m.yaml")
    assert err.value.field == field


@pytest.mark.parametrize("doc, field", [({"mode": "train", "seq_len": 8}, "global_batch"), ({"mode": "serve"}, "mode"),
                                        ({"mode": "train", "global_batch": 8, "seq_len": 8, "dtype": "fp4"}, "dtype")])
def test_bad_workloads_name_the_field(doc, field):
    with pytest.raises(InputError) as err:
        parse_workload(doc, "w.yaml")
    assert err.value.field == field


def test_presets_name_their_gpus_and_files_carry_them():
    topo = cluster("dgx-a100", 1)
    assert {topo.node_by_id[g].model for g in topo.gpus} == {"a100-80g"}
    back = parse_topology(topology_to_dict(topo), "x")
    assert [back.node_by_id[g].model for g in back.gpus] == ["a100-80g"] * 8
    doc = topology_to_dict(topo)
    doc["nodes"][0]["model"] = "a100-81g"
    with pytest.raises(InputError, match="unknown GPU"):
        parse_topology(doc, "x")


def test_a_mixed_cluster_is_one_generator():
    topo = parse_topology({"name": "mix", "generator": {"servers": [{"preset": "hgx-h100", "count": 1},
                                                                    {"preset": "dgx-a100", "count": 2}]}}, "mix")
    assert [topo.node_by_id[g].model for g in topo.gpus[::8]] == ["h100", "a100-80g", "a100-80g"]


@pytest.fixture()
def workload_file(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({"mode": "train", "global_batch": 16, "seq_len": 2048}))
    return path


def test_cli_fix_that_does_not_divide_exits_2(run_cli, workload_file, tmp_path):
    plan = tmp_path / "p.json"
    result = run_cli("parallelize", "--model", "llama3-8b", "--topology", "dgx-a100", "--workload", workload_file,
                     "--fix", "tp=3", "-o", plan)
    assert result.exit_code == 2 and "--fix tp" in result.stderr and not plan.exists()


def test_cli_fix_that_does_not_fit_exits_3_naming_the_overflow(run_cli, workload_file, tmp_path):
    plan = tmp_path / "p.json"
    result = run_cli("parallelize", "--model", "llama3-70b", "--topology", "dgx-a100", "--workload", workload_file,
                     "--fix", "tp=1,pp=1,cp=1,dp=8,recompute=none,distributed_optimizer=0", "-o", plan)
    assert result.exit_code == 3 and "GB more than" in result.stderr and not plan.exists()


def test_cli_evaluates_a_fixed_configuration(run_cli, workload_file, tmp_path):
    plan = tmp_path / "p.json"
    result = run_cli("parallelize", "--model", "llama3-8b", "--topology", "dgx-a100", "--workload", workload_file,
                     "--fix", "tp=2,pp=2,dp=2,cp=1,micro_batch=1,interleave=2,recompute=selective,"
                              "sequence_parallel=1,distributed_optimizer=1", "-o", plan, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["plan"]["config"]["interleave"] == 2 and doc["metrics"]["configurations_considered"] == 1
    assert {"step_time_s", "memory_per_gpu_GB", "mfu"} <= doc["metrics"].keys()


def test_cli_unknown_model_and_gpu_without_model(run_cli, workload_file, tmp_path):
    assert run_cli("parallelize", "--model", "gpt-5", "--topology", "dgx-a100", "--workload", workload_file
                   ).exit_code == 2
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"name": "bare", "nodes": [{"id": "g0", "type": "gpu"}], "links": []}))
    result = run_cli("parallelize", "--model", "llama3-8b", "--topology", bare, "--workload", workload_file)
    assert result.exit_code == 2 and "has no model" in result.stderr
