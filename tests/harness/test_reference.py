import multiprocessing as mp
import time

from harness import reference


def _hold(cache, key, seconds, marks):
    with reference.lock(cache, key):
        marks.put(("in", time.time()))
        time.sleep(seconds)
        marks.put(("out", time.time()))


def test_reference_lock_serialises_processes(tmp_path):
    ctx = mp.get_context("fork")
    marks = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), "k", 0.5, marks)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    events = sorted([marks.get(timeout=5) for _ in range(4)], key=lambda e: e[1])
    assert [e[0] for e in events] == ["in", "out", "in", "out"]


def test_reference_round_trip(tmp_path):
    import torch

    images = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8) for _ in range(2)]
    assert reference.load(str(tmp_path), "k") is None
    reference.save(str(tmp_path), "k", images, {"note": "x"})
    loaded = reference.load(str(tmp_path), "k")
    assert all(torch.equal(a, b) for a, b in zip(images, loaded))


def test_reference_cell_runs_without_the_cells_gpu_cap_or_offload(compose):
    from harness import reference, resume
    from harness.validate import validate

    cell = validate(compose(["engine=sdnq", "dtype=int8", "offload=balanced", "run.gpu_memory_gib=16"]))
    ref = reference.spec_for(cell)
    assert (ref.engine, ref.dtype, ref.offload["name"]) == ("bf16", "bf16", "none")
    assert ref.run["gpu_memory_gib"] is None and ref.run["gpu_memory_fraction"] is None
    assert ref.config["run"]["gpu_memory_gib"] is None
    assert cell.run["gpu_memory_gib"] == 16  # the cell itself keeps its cap
    hw, vers = "cpu", {}
    capped = resume.cell_key(cell, hw, vers)
    uncapped = resume.cell_key(validate(compose(["engine=sdnq", "dtype=int8", "offload=balanced"])), hw, vers)
    assert capped != uncapped
