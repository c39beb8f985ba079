"""`precision: auto` and `channels_last: auto`: what they resolve to on each kind of device, the CPU probe's verdict
kept per machine, and bf16 on the CPU training and evaluating for real."""

from __future__ import annotations

import json

import pytest
import torch

from fastpose import config, device
from fastpose.bench import bench_step, synthetic_batch
from fastpose.errors import UserError
from fastpose.model import build_model
from fastpose.train import compute_losses


@pytest.fixture
def fresh_probe(monkeypatch, tmp_path):
    """cpu_bf16 recomputed, its cache in tmp_path, no FASTPOSE_CPU_BF16 override, the probe's timings given."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FASTPOSE_CPU_BF16", raising=False)
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    calls = []

    def probe(times):
        def run():
            calls.append(times)
            return times
        monkeypatch.setattr(device, "_probe_seconds", run)

    device.cpu_bf16.cache_clear()
    yield probe, calls, tmp_path / "fastpose" / "cpu_bf16.json"
    device.cpu_bf16.cache_clear()


def test_forced_precisions_pass_through_and_auto_follows_the_cpu_verdict(monkeypatch):
    cpu = torch.device("cpu")
    for p in ("fp32", "bf16", "fp16"):
        assert device.resolve_precision(p, cpu) == (p, "set in the config")
    monkeypatch.setenv("FASTPOSE_CPU_BF16", "1")
    device.cpu_bf16.cache_clear()
    assert device.resolve_precision("auto", cpu) == ("bf16", "FASTPOSE_CPU_BF16=1")
    with device.autocast("auto", cpu):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("FASTPOSE_CPU_BF16", "0")
    device.cpu_bf16.cache_clear()
    assert device.resolve_precision("auto", cpu)[0] == "fp32"
    with device.autocast("auto", cpu):
        assert not torch.is_autocast_enabled("cpu")
    device.cpu_bf16.cache_clear()


def test_cpu_without_native_bf16_stays_fp32(fresh_probe, monkeypatch):
    probe, calls, _ = fresh_probe
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
    probe((0.010, 0.001))  # would say bf16 is 10x faster: never asked
    fast, why = device.cpu_bf16()
    assert not fast and "no native bf16" in why and calls == []


def test_probe_verdict_is_measured_once_and_kept(fresh_probe):
    probe, calls, cache = fresh_probe
    probe((0.010, 0.004))  # bf16 takes 40% of fp32's time: faster
    assert device.cpu_bf16() == (True, "avx512_bf16; conv probe fp32 10.0 ms, bf16 4.0 ms")
    kept = json.loads(cache.read_text())
    assert list(kept.values()) == [{"fp32_ms": 10.0, "bf16_ms": 4.0}]
    device.cpu_bf16.cache_clear()
    probe((0.001, 0.010))  # a later process would measure the opposite: the kept verdict wins
    assert device.cpu_bf16()[0] is True and len(calls) == 1


def test_probe_margin_a_tie_stays_fp32(fresh_probe):
    probe, _, _ = fresh_probe
    probe((0.010, 0.0095))  # 95% of fp32's time: inside the 90% margin
    fast, why = device.cpu_bf16()
    assert not fast and why.endswith("bf16 not faster here")


def test_channels_last_auto_and_its_validation():
    assert device.resolve_channels_last("auto", torch.device("cpu")) is True
    assert device.resolve_channels_last(False, torch.device("cpu")) is False
    assert config.load(None, channels_last=False).channels_last is False
    assert config.load(None).precision == "auto" and config.load(None).channels_last == "auto"
    with pytest.raises(UserError, match="channels_last = 'yes' is not allowed: true, false or auto"):
        config.load(None, channels_last="yes")
    with pytest.raises(UserError, match="precision = 'bf32' is not allowed: one of auto, fp32, bf16, fp16"):
        config.load(None, precision="bf32")


def test_bf16_training_step_on_the_cpu_runs_in_bf16_and_keeps_float32_losses():
    cfg = config.load(None, net_type="resnet_18", num_joints=3, location_refinement=True, precision="bf16",
                      batch_size=2, device="cpu", seed=0)
    model = build_model(cfg).train()
    batch = synthetic_batch(cfg, 2, 64, torch.device("cpu"))
    with device.autocast(cfg.precision, torch.device("cpu")):
        out = model(batch.images)
    assert out["part"].dtype == torch.bfloat16  # the network ran in bf16
    losses = compute_losses(cfg, out, batch)
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])
    res = bench_step(cfg, torch.device("cpu"), 64, warmup=0, iters=1)
    assert res["precision"] == "bf16" and res["channels_last"] is True


def test_compile_auto_stays_eager_and_only_auto_or_bools_are_allowed():
    assert device.resolve_compile("auto", torch.device("cpu")) == (False, "auto: measured slower than eager on the CPU")
    assert device.resolve_compile(True, torch.device("cpu")) == (True, "set in the config")
    assert device.resolve_compile(False, torch.device("cpu"))[0] is False
    assert config.load(None).compile == "auto" and config.load(None, compile=True).compile is True
    with pytest.raises(UserError, match="compile = 'yes' is not allowed: true, false or auto"):
        config.load(None, compile="yes")
