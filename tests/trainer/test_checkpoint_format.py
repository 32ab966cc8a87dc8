"""What `training_state` writes, `resume` reads back: the two halves of the checkpoint format, kept
side by side in trainer/checkpoint.py, checked against each other here without a training run."""
from __future__ import annotations

import torch

from trainer import checkpoint as ckpt
from trainer.config import TrainConfig
from trainer.engine import AmpSettings, make_grad_scaler, make_optimizer
from trainer.models import build_model
from trainer.schedule import Schedule, make_scheduler

CLASSES = ["a", "b", "c"]
CONFIG = TrainConfig(arch="resnet_small", width=8, depths=(1, 1), stem="small", batch_size=4)


def _state():
    model = build_model(CONFIG.arch, len(CLASSES), width=CONFIG.width, depths=CONFIG.depths, stem="small")
    optimizer = make_optimizer(model, 0.1, 0.9, True, 5e-5)
    scaler = make_grad_scaler(AmpSettings(None, False, "cpu"))
    return model, optimizer, scaler


def _save(tmp_path, at: ckpt.Position, drop: tuple[str, ...] = ()) -> torch.nn.Module:
    model, optimizer, scaler = _state()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()   # momentum buffers to carry over
    scheduler = make_scheduler(optimizer, Schedule("cosine", 100, 0, 25.0, 0.25), 0)
    run = ckpt.RunInfo(CONFIG, "small", CLASSES, {}, "demo", 16)
    payload = ckpt.training_state(model, optimizer, scheduler, scaler, run, at, ckpt.rng_states(1))
    for key in drop:
        del payload[key]
    ckpt.save(payload, tmp_path / "last.pt", keep_previous=True)
    return model


def test_resume_restores_what_training_state_saved(tmp_path):
    # 10 images, not 3 steps x 4: the resume counts the images (saved at another batch size, say).
    saved = _save(tmp_path, ckpt.Position(epoch=2, step=3, images=10, partial=[1.5, 7.0, 10.0, 1.0], best_top1=61.5,
                                          elapsed_seconds=30.0))
    model, optimizer, scaler = _state()
    start = ckpt.resume("auto", tmp_path, model, optimizer, scaler, CONFIG, CLASSES, "small", rank=0, world=1,
                        shard_len=40)
    assert (start.epoch, start.step, start.skip, start.best_top1, start.elapsed_seconds) == (2, 3, 10, 61.5, 30.0)
    assert start.partial == (1.5, 7.0, 10.0, 1.0) and start.source == tmp_path / "last.pt"
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"], "the momentum buffers were not restored"


def test_a_checkpoint_from_before_images_in_epoch_and_elapsed_seconds_still_resumes(tmp_path):
    _save(tmp_path, ckpt.Position(0, 3, 12, [0.0] * 4, 0.0, 30.0), drop=("images_in_epoch", "elapsed_seconds"))
    model, optimizer, scaler = _state()
    start = ckpt.resume("auto", tmp_path, model, optimizer, scaler, CONFIG, CLASSES, "small", rank=0, world=1,
                        shard_len=40)
    # Its steps count at the batch size it was saved with (4), one process (one RNG state).
    assert (start.step, start.skip, start.elapsed_seconds) == (3, 12, 0.0)


def test_no_checkpoint_or_resume_none_is_a_fresh_start(tmp_path):
    model, optimizer, scaler = _state()
    args = (model, optimizer, scaler, CONFIG, CLASSES, "small", 0, 1, 40)
    assert ckpt.resume("auto", tmp_path, *args) == ckpt.ResumePoint()
    _save(tmp_path, ckpt.Position(1, 0, 0, [0.0] * 4, 50.0, 10.0))
    assert ckpt.resume("none", tmp_path, *args) == ckpt.ResumePoint()
