"""Provenance, once for every report: device, versions, workload, weights, caps, the synthetic warning."""
from reports import provenance
from tests.reports import samples
from tests.reports.samples import MATRIX


def test_summary_of_a_group():
    info = provenance.summary([samples.record("bf16", "bf16", steps_per_s=1.0)])
    assert info["device"] == "NVIDIA H200" and info["memory"] == "GPU (torch.cuda allocated / reserved)"
    assert info["driver / CUDA"] == "570.1 / 12.8" and info["resolution"] == "1024x1024 px"
    assert info["steps"] == "28" and info["prompts x seeds"] == "2 x 1"
    assert info["versions"] == "diffusers 0.42.1, torch 2.11.0" and info["harness"] == "abc123"
    assert info["weights"] == "synthetic (random) weights" and info["warning"] == provenance.SYNTHETIC_WARNING
    assert "GPU memory cap" not in info
    assert "- **" + provenance.SYNTHETIC_WARNING + "**" in provenance.markdown(info)


def test_real_weights_and_missing_figures():
    record = samples.record("bf16", "bf16", synthetic=False)
    record["workload"] = None
    record["env"]["versions"]["bitsandbytes"] = "not installed"
    info = provenance.summary([record])
    assert info["weights"] == "real checkpoint" and "warning" not in info
    assert info["resolution"] == "-" and info["steps"] == "-" and "bitsandbytes" not in info["versions"]


def test_gpu_caps_are_listed_as_fraction_and_gib_pairs():
    def capped(record, fraction, gib):
        record = {**record, "config": {"run": {"gpu_memory_fraction": fraction}}, "env": dict(record["env"])}
        if gib is not None:
            record["env"]["gpu_cap_gib"] = gib
        return record

    records = [capped(MATRIX[0], 0.46, 64.308), capped(MATRIX[2], 0.46, None),  # failed before it knew
               capped(MATRIX[3], 0.92, 128.617)]
    cap = provenance.summary(records)["GPU memory cap"]
    assert cap.startswith("0.46 of the card = 64.308 GiB, 0.92 of the card = 128.617 GiB per cell")
    by_gib = [{**r, "env": {**r["env"], "gpu_cap_gib": g}} for r, g in zip(MATRIX[:2], (24.0, 16.0))]
    cap = provenance.summary(by_gib)["GPU memory cap"]
    assert cap.startswith("16 GiB, 24 GiB per cell")  # caps given in GiB are not merged into one


def test_the_matrix_lists_the_same_provenance_with_its_caveat():
    from reports.matrix.frame import provenance as matrix_provenance

    info = dict(matrix_provenance(MATRIX))
    shared = provenance.summary(MATRIX)
    assert info["device"] == shared["device"] and info["versions"] == shared["versions"]
    assert info["workload"].startswith("512x512 px, 4 steps: ") and "not benchmarks" in info["workload"]
    assert "warning" not in info and "memory" not in info
