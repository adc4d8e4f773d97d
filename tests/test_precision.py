"""The precision a job trains and encodes in: chosen from the request and the hardware (pure,
both answers tested without the hardware), applied by autocast, and part of the reuse key."""

from __future__ import annotations

import pytest
import torch

from sbert_exp.errors import ConfigError
from sbert_exp.model.precision import (
    bf16_emulated,
    choose_precision,
    in_precision,
    parse_cpu_flags,
)

EPYC = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
XEON = frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"})
GRAVITON3 = frozenset({"fp", "asimd", "sve", "bf16", "i8mm"})
OLD = frozenset({"avx2", "avx512f", "avx512_vnni"})


@pytest.mark.parametrize(
    ("requested", "device", "flags", "cuda_bf16", "chosen"),
    [
        ("auto", "cpu", EPYC, False, "bf16"),
        ("auto", "cpu", XEON, False, "bf16"),
        ("auto", "cpu", GRAVITON3, False, "bf16"),
        ("auto", "cpu", OLD, False, "fp32"),
        ("auto", "cpu", frozenset(), False, "fp32"),
        ("fp32", "cpu", EPYC, False, "fp32"),
        ("bf16", "cpu", EPYC, False, "bf16"),
        ("bf16", "cpu", OLD, False, "bf16"),  # asked for: runs, emulated
        ("auto", "cuda", frozenset(), True, "bf16"),
        ("auto", "cuda:1", OLD, False, "fp16"),  # the GPU's own answer, not the CPU's
        ("fp32", "cuda", frozenset(), True, "fp32"),
        ("bf16", "cuda", frozenset(), True, "bf16"),
    ],
)
def test_the_precision_follows_the_request_and_the_hardware(requested, device, flags,
                                                            cuda_bf16, chosen):
    assert choose_precision(requested, device, flags, cuda_bf16) == chosen


def test_bf16_on_a_gpu_without_it_ends_in_one_line():
    with pytest.raises(ConfigError) as e:
        choose_precision("bf16", "cuda:0", EPYC, cuda_bf16=False)
    assert str(e.value) == ("precision=bf16 but cuda:0 has no bf16 arithmetic: use "
                            "precision=auto (fp16 on this GPU) or precision=fp32")


def test_bf16_is_emulated_only_on_a_cpu_without_it():
    assert bf16_emulated("cpu", OLD) and not bf16_emulated("cpu", EPYC)
    assert not bf16_emulated("cuda", frozenset())


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f avx512_bf16\n\n"
         "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n", {"fpu", "avx512f", "avx512_bf16"}),
        ("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16\n",
         {"fp", "asimd", "sve", "bf16"}),
        ("", set()),
    ],
)
def test_cpu_flags_are_read_as_linux_reports_them(text, flags):
    assert parse_cpu_flags(text) == flags


def test_a_model_in_bf16_is_a_bf16_copy_and_in_fp32_itself():
    layer = torch.nn.Linear(8, 4)
    copy = in_precision(layer, "bf16")
    assert copy.weight.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    assert in_precision(layer, "fp32") is layer


def test_a_job_trains_in_bf16_when_asked_and_keeps_fp32_weights(tiny_bert, tmp_path, caplog):
    import logging
    import math

    from safetensors import safe_open

    from conftest import mlflow_runs, run_tiny_job, tiny_overrides

    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "precision=bf16",
                 "pruning.keep=2", "eval.speed_rounds=0"]
    with caplog.at_level(logging.INFO, logger="sbert_exp"):
        metrics = run_tiny_job(overrides, tmp_path / "job")
    assert any(r.getMessage().startswith("precision bf16 (precision=bf16 on cpu; CPU bf16 flags:")
               for r in caplog.records)
    assert math.isfinite(metrics["train_sts/loss"]) and metrics["train_sts/pairs"] == 32
    [run] = mlflow_runs(tmp_path)[1]
    assert run.data.params["fingerprint.precision"] == "bf16"
    weights = next((tmp_path / "job" / "model").rglob("model.safetensors"))
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_a_speed_figure_names_the_cpu_and_its_bf16_and_int8_flags():
    from sbert_exp.model.precision import describe_cpu

    epyc = ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n"
            "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n")
    assert describe_cpu(epyc) == "AMD EPYC 9B14 (avx512_bf16 avx512_vnni)"
    old = "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu avx2\n"
    assert describe_cpu(old) == "Intel(R) Xeon(R) CPU @ 2.20GHz (no bf16 or int8 flags)"
