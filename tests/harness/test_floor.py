"""Noise floors: which cells get one, the floor cell's settings and key, and (with a stand-in for
torch.compile, whose real CPU compile takes minutes here) a compiled cell's floor computed once, stored as
the BF16 cell it is, carried by every cell with that compile mode and shown in the reports."""
import pytest

from harness import floor, isolate, reference
from harness.validate import validate

TINY = ["model=flux-tiny", "workload=tiny", "workload.height=64", "workload.width=64", "workload.steps=2",
        "metrics.save_images=false", "run.device=cpu"]


def _spec(compose, *overrides):
    return validate(compose([*TINY, *overrides]), check_environment=False)


def test_eager_and_non_streaming_cells_have_no_floor(compose):
    for overrides in ((), ("offload=model",), ("compile=default", "lora=synthetic")):
        spec = _spec(compose, "engine=sdnq", "dtype=int8", *overrides)
        assert not floor.needs_floor(spec) and floor.key(spec, "ref") is None, overrides


def test_each_compile_mode_has_its_own_floor_key(compose):
    keys = {mode: floor.key(_spec(compose, "engine=sdnq", "dtype=int8", f"compile={mode}"), "ref")
            for mode in ("default", "max-autotune", "reduce-overhead", "regional", "cudagraph")}
    assert None not in keys.values() and len(set(keys.values())) == len(keys)
    # the engine does not enter the key: every quantized cell of one compile mode shares its floor
    assert floor.key(_spec(compose, "engine=torchao", "dtype=int8", "compile=default"), "ref") == keys["default"]
    assert floor.key(_spec(compose, "engine=sdnq", "dtype=int8", "compile=default"), "other-ref") != keys["default"]


def test_the_floor_cell_is_bf16_with_the_cells_compile_and_streaming_offload(compose):
    spec = _spec(compose, "engine=sdnq", "dtype=int8", "compile=regional", "offload=model", "run.gpu_memory_gib=16")
    cell = floor.spec_for(spec)
    assert (cell.engine, cell.dtype, cell.compile["name"], cell.offload["name"]) == ("bf16", "bf16", "regional", "none")
    assert cell.run["gpu_memory_gib"] is None and cell.config["compile"]["name"] == "regional"
    streamed = floor.spec_for(_spec(compose, "engine=sdnq", "dtype=int8", "offload=balanced", "run.gpu_memory_gib=16"))
    assert (streamed.offload["name"], streamed.compile["name"], streamed.run["gpu_memory_gib"]) == ("balanced", "none", 16)
    assert floor.is_floor(cell) and floor.is_floor(streamed) and not floor.is_floor(spec)
    assert floor.is_floor(_spec(compose, "engine=bf16", "compile=regional"))


def test_within_reads_each_metric_the_right_way():
    assert floor.within(30.0, 28.0, "psnr_db") and not floor.within(27.0, 28.0, "psnr_db")
    assert floor.within(0.05, 0.09, "lpips") and not floor.within(0.1, 0.09, "lpips")
    assert floor.within(None, 28.0, "psnr_db") is None


def test_the_reference_cell_compresses_the_models_own_denoiser(compose):
    assert reference.spec_for(_spec(compose, "model=sdxl-tiny", "engine=sdnq", "dtype=int8")).components == ["unet"]
    qwen = reference.spec_for(_spec(compose, "model=qwen-image-tiny", "engine=sdnq", "dtype=int8"))
    assert qwen.components == [qwen.model["denoiser"]] == ["transformer"]


def test_reference_key_names_the_call_settings_and_keeps_default_keys(compose):
    import dataclasses
    import hashlib
    import json

    from harness.synthetic import ARCHITECTURES

    spec = _spec(compose, "engine=sdnq", "dtype=int8")
    model, work = spec.model, spec.workload
    before = {"checkpoint": None, "synthetic": f"{model['synthetic']}-{ARCHITECTURES[model['synthetic']].fingerprint()}",
              "guidance": model["guidance_scale"], "max_seq": model["max_sequence_length"],
              "prompts": work["prompts"], "seeds": work["seeds"], "steps": work["steps"],
              "height": work["height"], "width": work["width"], "hardware": "cpu", "versions": {}}
    old = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert reference.reference_key(spec, "cpu", {}) == old
    keys = {reference.reference_key(_spec(compose, "engine=sdnq", "dtype=int8", o), "cpu", {})
            for o in ("model.input_image=true", "+model.call.foo=1")}
    for changed in ({"pipeline": "FluxKontextPipeline"}, {"frames": 5}):  # past validation: keys only
        keys.add(reference.reference_key(dataclasses.replace(spec, model={**model, **changed}), "cpu", {}))
    assert old not in keys and len(keys) == 4


def _stand_in_compile(real):
    """compile=default as a fixed, deterministic perturbation of the denoiser's output (what compiled
    kernels' different rounding does), every other mode as it is."""
    def apply(pipe, name, fullgraph=False, dynamic=False):
        if name != "default":
            return real(pipe, name, fullgraph, dynamic)
        from harness.compilation import denoiser

        def nudge(module, args, out):
            sample = out[0] if isinstance(out, tuple) else out.sample
            sample = sample + 2e-3 * sample.abs().mean()
            return (sample, *out[1:]) if isinstance(out, tuple) else type(out)(sample=sample)

        denoiser(pipe).register_forward_hook(nudge)
        return {"mode": "default", "stand_in": True}
    return apply


@pytest.mark.timeout(300)
def test_a_compiled_cells_floor_is_computed_once_stored_and_shown(compose, cache_dir, tmp_path, monkeypatch):
    from harness import compilation, runner
    from harness.store import ResultStore
    import pandas as pd

    from reports import html, leaderboard

    monkeypatch.setattr(compilation, "apply", _stand_in_compile(compilation.apply))
    # The stand-in reaches the cells only in forked children: fork even if an earlier test in this process
    # made the runner spawn from now on (these CPU cells need no CUDA in the child).
    monkeypatch.setattr(isolate, "start_method", lambda: "fork")
    store = tmp_path / "results.sqlite"
    run = [f"run.store={store}", f"run.cache_dir={cache_dir}", "workload.seeds=[13]"]
    said = []
    for cell in (("engine=sdnq", "dtype=int8"), ("engine=torchao", "dtype=int8")):
        spec = validate(compose([*TINY, *run, *cell, "compile=default"]))
        runner.run(spec, str(tmp_path / cell[0]), echo=said.append)
    assert sum(line.startswith("computing the noise floor") for line in said) == 1

    records = list(ResultStore(str(store)).records())
    by = {(r["engine"], r["compile"]): r for r in records}
    assert sorted(by) == [("bf16", "default"), ("bf16", "none"), ("sdnq", "default"), ("torchao", "default")]
    assert len(records) == 4  # the floor cell stored once
    floor_record = by[("bf16", "default")]
    assert floor_record["status"] == "ok" and 20 < floor_record["quality"]["psnr_db"] < 90
    for engine in ("sdnq", "torchao"):
        carried = by[(engine, "default")]["quality"]["floor"]
        assert carried["cell_key"] == floor_record["cell_key"] and carried["compile"] == "default"
        assert carried["psnr_db"] == floor_record["quality"]["psnr_db"]
    assert by[("bf16", "none")]["quality"]["floor"] is None
    key = floor.key(validate(compose([*TINY, *run, "engine=sdnq", "dtype=int8", "compile=default"])),
                    floor_record["quality"]["reference"])
    assert reference.load(str(cache_dir), key) is not None  # its images, cached beside the entry

    board = leaderboard.markdown(records)
    assert "floor PSNR dB" in board and "vs noise floor" in board and "Noise floor:" in board
    assert f"{floor_record['quality']['psnr_db']:.4g}" in board
    df = leaderboard.frame(records)
    verdicts = dict(zip(zip(df["engine"], df["compile"]), df["vs_floor"]))
    assert verdicts[("bf16", "default")] == "floor" and pd.isna(verdicts[("bf16", "none")])
    for engine in ("sdnq", "torchao"):
        psnr, floor_psnr = by[(engine, "default")]["quality"]["psnr_db"], floor_record["quality"]["psnr_db"]
        assert verdicts[(engine, "default")] == ("within" if psnr >= floor_psnr else "beyond")
    page = html.render(records, tmp_path / "page").read_text()
    assert "vs noise floor" in page and "the noise floor" in page
    eager_only = leaderboard.markdown([by[("bf16", "none")]])
    assert "floor PSNR dB" not in eager_only and "Noise floor:" not in eager_only
