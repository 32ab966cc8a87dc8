"""CUDA-graphed training steps (engine.GraphedTraining) and the fused optimizer around them.

The capture itself needs a GPU: on a CPU the wrapper is tested with a fake capture, and the last
test (skipped without CUDA, run by scripts/gpu-check.sh on a GPU) checks that graphed steps give
the same weights as eager ones.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainer.engine import (AmpSettings, GraphedTraining, amp_settings, load_optimizer_state, make_grad_scaler,
                            make_optimizer, train_step, training_forward, unwrap)
from trainer.models import build_model

CPU = torch.device("cpu")
FP32 = AmpSettings(None, False, "cpu")


class FakeCapture:
    """Stands in for capture_cuda_graph: records what was captured, replays the model eagerly."""

    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, model, images, amp):
        self.shapes.append(tuple(images.shape))
        return lambda x: model(x) * 1.0


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet_small", 5, width=8, depths=(1, 1), stem="small")


def test_one_capture_per_shape_and_short_batches_and_eval_run_eagerly():
    model, fake = small_model(), FakeCapture()
    graphed = GraphedTraining(model, FP32, batch_size=4, capture=fake)
    graphed.train()
    for _ in range(3):
        graphed(torch.randn(4, 3, 16, 16))
    assert fake.shapes == [(4, 3, 16, 16)] and graphed.captures == 1
    graphed(torch.randn(3, 3, 16, 16))               # the short last batch of an epoch
    graphed(torch.randn(4, 3, 24, 24))               # progressive resizing: a new shape, a new capture
    graphed(torch.randn(4, 3, 24, 24))
    assert fake.shapes == [(4, 3, 16, 16), (4, 3, 24, 24)]
    model.eval()
    with torch.no_grad():
        graphed(torch.randn(4, 3, 24, 24))           # evaluation never replays the training graph
    assert graphed.captures == 2
    x = torch.randn(4, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    model.train()
    graphed(x)                                       # other strides: other kernels, so a new capture
    assert graphed.captures == 3


def test_a_failed_capture_leaves_training_eager_with_a_warning(caplog):
    model = small_model()

    def broken(*_):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    graphed = GraphedTraining(model, FP32, batch_size=4, capture=broken)
    graphed.train()
    x = torch.randn(4, 3, 16, 16)
    with caplog.at_level("WARNING", logger="trainer"):
        out = graphed(x)
        graphed(x)
    assert torch.allclose(out, model(x)) and graphed.captures == 0
    assert "RuntimeError: CUDA error: operation not permitted" in graphed.failed
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "--no-cuda-graphs" in caplog.records[0].getMessage()


def test_capturing_leaves_batchnorm_statistics_as_they_were(monkeypatch):
    """make_graphed_callables runs warm-up steps through BatchNorm in train mode; whether the
    capture works or fails, the running statistics are put back."""
    from trainer import engine

    model = small_model()
    before = [b.clone() for b in model.buffers()]

    def warm_up_then(result):
        def fake(callables, sample_args, **_):
            for _ in range(3):
                callables(*sample_args)   # what the real warm-up does to BatchNorm
            if isinstance(result, Exception):
                raise result
            return result
        return fake

    for outcome in ("replay", RuntimeError("capture failed")):
        monkeypatch.setattr(torch.cuda, "make_graphed_callables", warm_up_then(outcome))
        try:
            engine.capture_cuda_graph(model, torch.randn(4, 3, 16, 16) * 3 + 1, FP32)
        except RuntimeError:
            pass
        assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


def test_the_wrapped_model_is_what_checkpoints_and_optimizers_see():
    model = small_model()
    graphed = GraphedTraining(model, FP32, batch_size=4, capture=FakeCapture())
    assert unwrap(graphed) is model
    assert [id(p) for p in graphed.parameters()] == [id(p) for p in model.parameters()]
    assert list(graphed.state_dict()) == [f"model.{k}" for k in model.state_dict()]


def test_graphs_are_on_only_where_they_can_work():
    model = small_model()
    amp = amp_settings(CPU)
    assert training_forward(model, amp, CPU, 4, True, False, False) == (model, "off (no CUDA device)")
    assert training_forward(model, amp, CPU, 4, False, False, False) == (model, "off")
    cuda = torch.device("cuda", 0)   # only the decision is made here, nothing runs on it
    assert training_forward(model, amp, cuda, 4, True, True, False)[1] == "off (torch.compile does its own)"
    assert training_forward(model, amp, cuda, 4, True, False, True)[1] == "off (not with DDP)"
    wrapped, why = training_forward(model, amp, cuda, 4, True, False, False)
    assert why == "on" and isinstance(wrapped, GraphedTraining) and wrapped.model is model


def test_optimizer_state_loads_across_implementations():
    """A run saved with one SGD implementation (fused on a GPU) resumes with another (a CPU), and
    the loaded state keeps the implementation of the optimizer it is loaded into."""
    model = small_model()
    saved_opt = make_optimizer(model, 0.1, 0.9, True, 5e-5)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    saved_opt.step()
    state = copy.deepcopy(saved_opt.state_dict())
    for group in state["param_groups"]:
        group["fused"], group["foreach"] = True, None  # as a CUDA run saves it
    fresh = make_optimizer(model, 0.1, 0.9, True, 5e-5)
    load_optimizer_state(fresh, state)
    assert [g["fused"] for g in fresh.param_groups] == [None, None]
    momentum = [fresh.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, saved_opt.state[p]["momentum_buffer"]) for a, p in zip(momentum, model.parameters()))
    fresh.step()   # and it steps


def test_a_cpu_saved_state_resumes_into_a_fused_optimizer_with_loss_scaling():
    """The other way round: a run saved on a CPU resumed on a GPU, where make_optimizer builds a
    fused SGD and GradScaler hands it the scale. Loading must not turn it into the unfused SGD,
    which refuses a grad scale. (Fused SGD also runs on a CPU, so this runs here.)"""
    model = small_model()
    saved = make_optimizer(model, 0.1, 0.9, True, 5e-5)
    assert [g["fused"] for g in saved.param_groups] == [None, None]
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    saved.step()
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in saved.param_groups]
    fused = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, fused=True)   # as on a GPU
    load_optimizer_state(fused, copy.deepcopy(saved.state_dict()))
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    fused.zero_grad()
    scaler.scale(model(torch.randn(2, 3, 8, 8)).sum()).backward()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(fused)
    scaler.update()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (run scripts/gpu-check.sh on one)")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_graphed_steps_match_eager_steps_on_a_gpu(precision):
    device = torch.device("cuda")
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bf16")
    amp = amp_settings(device, precision)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    base = small_model().to(device).to(memory_format=torch.channels_last)
    runs = []
    for graphs in (False, True):
        model = copy.deepcopy(base)
        opt = make_optimizer(model, 0.05, 0.9, True, 5e-5)
        scaler = make_grad_scaler(amp)
        forward, why = training_forward(model, amp, device, 8, graphs, False, False)
        criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        torch.manual_seed(1)
        losses = []
        for step in range(6):
            size = 16 if step < 3 else 24                         # a resolution change mid-run
            batch = 8 if step != 4 else 5                         # and one short batch
            images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
            targets = torch.randint(0, 5, (batch,), device=device)
            losses.append(float(train_step(forward, images, targets, criterion, opt, scaler, amp, True)))
        runs.append((model, losses, getattr(forward, "captures", 0)))
        if graphs:
            assert why == "on"
    (eager, eager_losses, _), (graphed, graphed_losses, captures) = runs
    assert captures == 2
    assert graphed_losses == pytest.approx(eager_losses, rel=2e-2, abs=2e-3)
    # state_dict holds BatchNorm's running statistics too: capturing did not disturb them.
    for a, b in zip(eager.state_dict().values(), graphed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-3)


def test_older_torch_captures_in_thread_local_mode_too(monkeypatch):
    """torch releases whose make_graphed_callables has no capture_error_mode argument get the mode
    through torch.cuda.graph for the capture only (the pin-memory thread must not break it)."""
    from trainer import engine

    seen = {}

    def old_make_graphed_callables(callables, sample_args, num_warmup_iters=3, allow_unused_input=False, pool=None):
        graph = torch.cuda.graph(None)   # as the old one does: no mode given, the class default applies
        seen["mode"] = graph.capture_error_mode
        return callables

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", old_make_graphed_callables)
    monkeypatch.setattr(torch.cuda.graph, "__init__", lambda self, cuda_graph, pool=None, stream=None,
                        capture_error_mode="global": setattr(self, "capture_error_mode", capture_error_mode))
    original = torch.cuda.graph
    model = small_model()
    engine.capture_cuda_graph(model, torch.randn(2, 3, 8, 8), FP32)
    assert seen["mode"] == "thread_local"
    assert torch.cuda.graph is original
