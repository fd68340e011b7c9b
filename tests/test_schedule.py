import pytest

from lal_core.model.recipe import TrainConfig, lr_at


def test_warmup_then_cosine():
    cfg = TrainConfig()
    assert lr_at(0, cfg) == pytest.approx(3e-6)
    assert lr_at(99, cfg) == pytest.approx(3e-4)
    assert lr_at(1000, cfg) == pytest.approx(2.76e-4, abs=0.005e-4)
    assert lr_at(5000, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(4999, cfg) < 1e-9


def test_schedule_is_monotonic_after_warmup():
    cfg = TrainConfig()
    lrs = [lr_at(i, cfg) for i in range(100, 5001, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
