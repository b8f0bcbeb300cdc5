"""The accelerator path's switches on CPU: torch.compile, bf16 autocast, channels-last, and the CUDA-only parts."""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import load_file

from conftest import compose_config
from famr_cli.logger import ExperimentLogger
from famr_cli.model_store import build_model, get_original_model
from famr_cli.prepared import prepare


@pytest.mark.slow
def test_compile_true_trains_and_caches_a_plain_state_dict(tmp_path, monkeypatch):
    # What is famr's here is the wrapping: training through the compiled module, caching the plain one.
    # Dynamo wraps the module and captures its forward the same under any backend; what a backend adds is
    # torch's own code generation: inductor's on CPU took 82 s of this test, aot_eager's tracing of the
    # backward 8.4 s, the plain eager backend 4.4 s (2 Intel Xeon cores). The default backend runs on a GPU
    # with `COMPILE=true scripts/gpu_check.sh`.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    cfg = compose_config([f"cache_dir={tmp_path}", "train.epochs=1", "progress=false", "compile=true"])
    p = prepare(cfg)
    trained = get_original_model(cfg, p, ExperimentLogger(), False)
    assert not trained.hit
    (weights,) = tmp_path.glob("original/*/model.safetensors")
    state = load_file(str(weights))
    assert not any(k.startswith("_orig_mod.") for k in state), "torch.compile's wrapper must not leak into the cache"
    plain = build_model(cfg, p.data, p.device)
    plain.load_state_dict(state)  # an eager run of any process count loads what a compiled run cached
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, trained.model.state_dict()[name]), name
    initial = build_model(cfg, p.data, p.device)
    assert not torch.equal(initial.state_dict()["fc.weight"], state["fc.weight"]), "compiled training must train the real weights"


def test_channels_last_puts_convolution_weights_in_nhwc(tmp_path):
    cfg = compose_config([f"cache_dir={tmp_path}", "channels_last=true"])
    p = prepare(cfg)
    model = build_model(cfg, p.data, p.device)
    conv = max((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), key=lambda m: m.weight.numel())
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really NHWC, not a 1x1 tensor that is both


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streamed_batches_are_pinned_and_copied_without_blocking_on_cuda():
    from famr_cli.batches import StreamedBatches

    x = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8)
    batches = StreamedBatches(
        x, torch.zeros(64, dtype=torch.long), batch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, device=torch.device("cuda")
    )
    loader = batches._loader([torch.arange(16)], torch.Generator())
    assert loader.pin_memory
    xb, yb = next(iter(batches))
    assert xb.is_cuda and yb.is_cuda


def test_bf16_autocast_runs_the_forward_in_bf16_on_cpu_and_keeps_fp32_weights():
    from famr_cli.train.loop import run_loop

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,)))] * 3
    seen = []

    def objective(m, x, y):
        logits = m(x)
        seen.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits.float(), y)

    result = run_loop(model, batches, objective, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, autocast=torch.bfloat16)
    assert seen == [torch.bfloat16] * 6
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.epoch_losses[1] < result.epoch_losses[0]
