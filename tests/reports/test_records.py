"""The one loader: newest record per cell key, oldest first, normalised through harness.record; a missing
store is an error that names it and creates nothing."""
import pytest

from harness.record import Record
from reports import records
from tests.reports import samples


def test_load_normalises_every_record_and_keeps_the_newest_per_cell_key(tmp_path):
    first = samples.record("bf16", "bf16", steps_per_s=1.0, created="2026-11-20T00:00:00")
    other = samples.record("torchao", "int8", steps_per_s=2.0)
    rerun = {**first, "created": "2026-11-22T00:00:00", "metrics": {"steps_per_s": 1.5}, "not_a_key": 1}
    loaded = records.load(samples.store(tmp_path / "s.sqlite", [first, other, rerun]))
    assert [(r["engine"], r["created"]) for r in loaded] == [("torchao", other["created"]),
                                                             ("bf16", "2026-11-22T00:00:00")]
    newest = loaded[1]
    assert newest["metrics"]["steps_per_s"] == 1.5 and "not_a_key" not in newest
    assert set(newest) == set(Record().to_dict())  # every schema key, present
    assert newest["metrics"]["peak_mem_gib"] is None and newest["error"] is None


def test_a_missing_store_is_named_and_not_created(tmp_path):
    missing = tmp_path / "none" / "results.sqlite"
    with pytest.raises(records.NoStore) as info:
        records.load(missing)
    assert str(info.value) == f"no result store at {missing} (run a cell first, or pass --store)"
    assert not missing.parent.exists()


def test_source_label_drops_folders_and_passwords(tmp_path):
    assert records.source_label(tmp_path / "a" / "results.sqlite") == "results.sqlite"
    url = "postgresql://bench:secret@db.example/results"
    assert records.source_label(url) == "postgresql://bench:***@db.example/results"


def test_groups_labels_and_reference():
    ref = samples.record("bf16", "bf16")
    cells = [samples.record("torchao", "int8", model="sdxl"), ref,
             samples.record("sdnq", "int8", offload="balanced", compile="regional")]
    assert list(records.groups(cells)) == [("flux-dev", "NVIDIA H200"), ("sdxl", "NVIDIA H200")]
    assert records.is_reference(ref) and not records.is_reference(cells[0])
    assert records.label(cells[2]) == "sdnq:int8 offload=balanced compile=regional"
    assert records.device_of({"env": None}) == "unknown"
