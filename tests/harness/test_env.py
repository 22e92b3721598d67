"""`harness.env`: what a record says it was measured with."""
import torch

from harness import env


def test_the_record_says_whether_the_compile_cache_was_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert env.compile_cache() == {"dir": str(tmp_path), "files_at_start": 0}
    (tmp_path / "fxgraph").mkdir()
    for i in range(3):
        (tmp_path / "fxgraph" / f"entry{i}").write_text("x")
    assert env.compile_cache()["files_at_start"] == 3
    assert env.compile_cache(limit=2)["files_at_start"] == 2
    assert env.collect(torch.device("cpu"))["compile_cache"]["files_at_start"] == 3


def test_without_the_variable_the_cache_is_inductors_default(monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert env.compile_cache()["dir"] == default_cache_dir()
