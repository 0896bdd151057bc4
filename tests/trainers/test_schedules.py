"""Loss-weight and learning-rate schedules."""

import math

import pytest
import torch

from microforge.trainers.schedules import linear_ramp, loss_weights, training_progress, warmup_cosine_lambda


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, (1.0, 1.0, 0.0)),  # 0%
        (25, (1.0, 0.875, 0.0)),  # 25%: gamma starts rising here
        (50, (1.0, 0.75, 0.25)),  # 50%
        (75, (1.0, 0.625, 0.5)),  # 75%: gamma reaches its plateau
        (100, (1.0, 0.5, 0.5)),  # 100% (the last epoch)
    ],
)
def test_loss_weights_at_milestones(epoch, expected):
    assert loss_weights(epoch, 101) == pytest.approx(expected)


def test_loss_weights_between_milestones_and_plateaus():
    assert loss_weights(10, 101)[2] == 0.0
    assert loss_weights(90, 101)[2] == 0.5
    assert loss_weights(35, 101)[2] == pytest.approx(0.1)
    betas = [loss_weights(e, 7)[1] for e in range(7)]
    assert betas == sorted(betas, reverse=True) and betas[0] == 1.0 and betas[-1] == 0.5


def test_single_epoch_run_and_bad_epochs():
    assert loss_weights(0, 1) == (1.0, 1.0, 0.0)
    assert training_progress(3, 4) == 1.0
    with pytest.raises(ValueError, match="epoch must be in"):
        loss_weights(4, 4)
    with pytest.raises(ValueError, match="total_epochs"):
        loss_weights(0, 0)


def test_linear_ramp():
    assert linear_ramp(0.5, 0.25, 0.75, 0.0, 1.0) == pytest.approx(0.5)
    assert linear_ramp(0.3, 0.5, 0.5, 2.0, 3.0) == 2.0  # a step when start == end
    assert linear_ramp(0.5, 0.5, 0.5, 2.0, 3.0) == 2.0
    assert linear_ramp(0.6, 0.5, 0.5, 2.0, 3.0) == 3.0
    with pytest.raises(ValueError, match="must be >= start"):
        linear_ramp(0.5, 0.8, 0.2, 0.0, 1.0)


def test_warmup_cosine_values():
    f = warmup_cosine_lambda(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    g = warmup_cosine_lambda(0, 10)
    assert g(0) == 1.0 and g(5) == pytest.approx(0.5) and g(10) == pytest.approx(0.0)
    decay = [f(s) for s in range(4, 15)]
    assert decay == sorted(decay, reverse=True)


def test_warmup_cosine_drives_lambda_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_lambda(2, 6))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * q / 4)) for q in range(4)]
    assert lrs == pytest.approx([1e-3 * e for e in expected])


@pytest.mark.parametrize(
    "args, match",
    [((-1, 10, 0.0), "warmup_steps"), ((10, 10, 0.0), "greater than"), ((1, 10, 1.5), "min_ratio")],
)
def test_warmup_cosine_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        warmup_cosine_lambda(*args)
