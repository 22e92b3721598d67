import time

import torch

from harness.measure import MemoryProbe, StepClock, host_peak_rss_gib, reset_host_peak


def test_step_clock_measures_intervals_between_steps():
    clock = StepClock(torch.device("cpu"))
    clock.begin()
    for _ in range(4):
        time.sleep(0.02)
        clock(None, 0, 0, {})
    intervals = clock.step_intervals()
    assert len(intervals) == 3 and all(0.015 < s < 0.2 for s in intervals)


def test_host_peak_rss_sees_a_transient_allocation():
    assert reset_host_peak()
    before = host_peak_rss_gib()
    blob = torch.ones(2**28, dtype=torch.uint8)  # 256 MiB, touched
    del blob
    assert host_peak_rss_gib() - before > 0.2
    probe = MemoryProbe(torch.device("cpu"))
    probe.reset_peak()
    assert probe.peak()["peak_allocated_gib"] < before + 0.2


def test_cuda_without_an_index_resolves_to_the_first_visible_gpu(monkeypatch):
    import torch

    from harness import env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.resolve_device("cuda") == torch.device("cuda", 0)  # set_device rejects a bare "cuda"
    assert env.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert env.resolve_device("cpu") == torch.device("cpu")


def test_spread_is_min_quartiles_median_max_of_a_sample():
    from harness.measure import spread

    assert spread([1.0, 2.0]) is None  # two values have no spread
    assert spread([3.0, 1.0, 2.0]) == {"n": 3, "min": 1.0, "q1": 1.0, "median": 2.0, "q3": 3.0, "max": 3.0,
                                       "iqr": 2.0}
    s = spread([8.0, 8.5, 9.0, 9.5, 10.0, 30.0, 9.0])  # one slow outlier moves max, hardly the quartiles
    assert (s["min"], s["median"], s["max"], s["n"]) == (8.0, 9.0, 30.0, 7)
    assert s["q1"] == 8.5 and s["q3"] == 10.0 and s["iqr"] == 1.5
