"""A model family is data: every model config composes and validates against its architecture's data file,
the full-size data files hold the published sizes, the tiny variants keep the published classes, and the
pieces a family brings (repeated blocks, video frames, an input image, new component kinds under balanced
offload, a real checkpoint's model_index) behave."""
import pytest
import torch
from torch import nn

from harness.synthetic import ARCHITECTURES, build_pipeline, ensure_checkpoint, instantiate
from harness.validate import validate
from tests.harness.models.families import FAMILIES, FULL_SIZE


def _models():
    from tests.conftest import CONF

    return sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", _models())
def test_every_model_config_validates_against_its_architecture(compose, model):
    cell = validate(compose([f"model={model}"]), check_environment=False)
    arch = ARCHITECTURES[cell.model["synthetic"]]
    assert cell.model["pipeline"] == arch.pipeline and cell.model["family"] == arch.family
    assert cell.components == [cell.model["denoiser"]]
    assert cell.model["denoiser"] in arch.modules()


@pytest.mark.parametrize("full, tiny", FULL_SIZE.items())
def test_tiny_variants_keep_the_published_classes(compose, full, tiny):
    a, b = (ARCHITECTURES[validate(compose([f"model={m}"]), check_environment=False).model["synthetic"]]
            for m in (full, tiny))
    assert (a.pipeline, a.classes, a.family) == (b.pipeline, b.classes, b.family)
    assert a.fingerprint() != b.fingerprint()


#: (architecture, component, published parameters in billions), counted on the meta device.
PUBLISHED = [("qwen-image", "transformer", 20.43), ("qwen-image", "text_encoder", 8.29),
             ("sd35-large", "transformer", 8.06), ("wan22-ti2v-5b", "transformer", 5.00),
             ("wan22-ti2v-5b", "text_encoder", 5.68), ("z-image-turbo", "transformer", 6.15),
             ("z-image-turbo", "text_encoder", 4.02), ("chroma", "transformer", 8.90),
             ("flux2-dev", "transformer", 32.22), ("flux2-dev", "text_encoder", 24.01)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch, component, billions", PUBLISHED, ids=[f"{a}-{c}" for a, c, _ in PUBLISHED])
def test_full_size_data_files_hold_the_published_sizes(arch, component, billions):
    a = ARCHITECTURES[arch]
    with torch.device("meta"):
        module = instantiate(a.classes[component], a.components[component])
    assert sum(p.numel() for p in module.parameters()) / 1e9 == pytest.approx(billions, rel=0.01)


def test_an_unknown_or_mismatched_pipeline_is_refused(compose):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="not a diffusers pipeline class"):
        validate(compose(["model=qwen-image-tiny", "model.pipeline=NoSuchPipeline"]), check_environment=False)
    with pytest.raises(ConfigError, match="is run by QwenImagePipeline, not model.pipeline=FluxPipeline"):
        validate(compose(["model=qwen-image-tiny", "model.pipeline=FluxPipeline"]), check_environment=False)
    with pytest.raises(ConfigError, match="component 'text_encoder_2' is not part of a qwen-image pipeline"):
        validate(compose(["model=qwen-image-tiny", "engine.components=[text_encoder_2]"]), check_environment=False)


@pytest.fixture(scope="module")
def tiny_pipelines():
    """Each tiny family's pipeline, built in memory once (BF16)."""
    out = {}
    for model in FAMILIES:
        pipe = build_pipeline(ARCHITECTURES[model])
        pipe.set_progress_bar_config(disable=True)
        out[model] = pipe
    return out


@pytest.mark.parametrize("model", FAMILIES)
def test_the_denoiser_declares_repeated_blocks_for_regional_compile(tiny_pipelines, model):
    """compile=regional compiles ``_repeated_blocks``: each named class is a block of the denoiser (SD3's
    transformer declares none: its cells are `unsupported`, test_cells.py)."""
    denoiser = tiny_pipelines[model].transformer
    declared = getattr(denoiser, "_repeated_blocks", None) or []
    if model == "sd35-large-tiny":
        assert declared == []
        return
    present = {type(m).__name__ for m in denoiser.modules()}
    assert declared and set(declared) <= present, (declared, present)


def _cell(compose, model, *overrides):
    return validate(compose([f"model={model}", "workload.height=64", "workload.width=64", "workload.steps=2",
                             *overrides]), check_environment=False)


def test_a_video_model_yields_every_frame(compose, tiny_pipelines):
    from harness.generate import generate
    from harness.measure import MemoryProbe

    cell = _cell(compose, "wan22-ti2v-5b-tiny", "workload.warmup=0")
    out = generate(tiny_pipelines["wan22-ti2v-5b-tiny"], cell, torch.device("cpu"), MemoryProbe(torch.device("cpu")))
    assert len(out["images"]) == cell.model["frames"] == 5
    assert all(im.shape == (3, 64, 64) and im.dtype == torch.uint8 for im in out["images"])
    assert out["n_timed_calls"] == 1 and out["n_step_samples"] >= 1 and out["steps_per_s"] > 0


def test_an_editing_model_gets_an_input_image_of_the_workload_size(compose):
    from harness.generate import pipeline_kwargs

    kwargs = pipeline_kwargs(_cell(compose, "flux-kontext-tiny", "workload.height=96"))
    assert kwargs["image"].size == (64, 96) and kwargs["max_area"] == 96 * 64 and kwargs["_auto_resize"] is False


def test_a_real_checkpoint_folder_lists_its_components_from_model_index(compose, cache_dir):
    folder = ensure_checkpoint("sd35-large-tiny", cache_dir)
    cell = validate(compose(["model=sd35-large-tiny", f"model.path={folder}",
                             "engine.components=[denoiser,text_encoder_3]"]), check_environment=False)
    assert cell.checkpoint_path == str(folder) and cell.components == ["transformer", "text_encoder_3"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", FAMILIES)
def test_balanced_offload_dispatches_every_component_and_keeps_the_output(compose, tiny_pipelines, model):
    """Balanced offload with the CPU standing in for the GPU: the new component kinds (Qwen2.5-VL, Mistral3,
    Qwen3 and UMT5 text encoders, 3D VAEs) are units like the others; the transformer only half fits."""
    from harness import offload
    from harness.generate import pipeline_kwargs
    from harness.offload.balanced.manager import BalancedOffload
    from harness.offload.balanced.units import build_units

    pipe = tiny_pipelines[model]
    kwargs = pipeline_kwargs(_cell(compose, model))

    def run():
        return pipe(prompt="a red fox", generator=torch.Generator().manual_seed(0), **kwargs)

    ref = run()
    modules = {n: m for n, m in pipe.components.items() if isinstance(m, nn.Module)}
    transformer = sum(u.nbytes for u in build_units(pipe.transformer))
    manager = BalancedOffload("cpu", usable=int(transformer / 0.7 / 2), high_watermark=0.7, low_watermark=0.2)
    manager.install(modules)
    pipe._balanced_offload = manager
    try:
        out = run()
        comps = offload.stats(pipe)["components"]
    finally:
        manager.remove()
        del pipe._balanced_offload
    for key in ("images", "frames"):
        if getattr(ref, key, None) is not None:
            assert torch.equal(getattr(out, key), getattr(ref, key))
    assert set(comps) == set(modules)
    assert all(c["dispatches"] >= 1 for c in comps.values()), comps
    assert comps["transformer"]["streamed_units"] > 0


def test_every_family_has_a_tiny_and_a_full_size_config(compose):
    models = set(_models())
    assert set(FAMILIES) <= models and set(FULL_SIZE) <= models
    assert {ARCHITECTURES[m].pipeline for m in FAMILIES} == set(FAMILIES.values())
