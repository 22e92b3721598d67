import pytest

from harness.validate import ConfigError, validate


@pytest.mark.parametrize("overrides, message", [
    (["engine.name=torchoa"], "Unknown engine 'torchoa'. Did you mean: torchao?"),
    (["dtype=nf4"], "engine 'torchao' does not support dtype 'nf4'. Supported: int8, int8dq, int4, float8, float8dq"),
    (["engine.mode=during"], "engine.mode must be 'pre' or 'post'"),
    (["engine.components=[unet]"], "component 'unet' is not part of a flux pipeline"),
    (["workload.steps=0"], "workload.steps must be at least 1"),
    (["workload.height=100"], "workload.height=100 is not a positive multiple of 16"),
    (["workload.prompts=[]"], "workload.prompts must be a non-empty list"),
    (["workload.seeds=[]"], "workload.seeds must name at least one seed"),
    (["offload.name=balanc"], "Unknown offload mode 'balanc'"),
    (["run.timeout_s=0"], "run.timeout_s must be positive"),
    (["run.gpu_memory_fraction=1.5"], "run.gpu_memory_fraction must be in (0, 1]"),
    (["run.gpu_memory_gib=-2"], "run.gpu_memory_gib must be positive"),
    (["run.gpu_memory_gib=24", "run.gpu_memory_fraction=0.2"], "not both"),
    (["model.path=/nonexistent/flux"], "model.path '/nonexistent/flux' does not exist"),
    (["model.path=someorg/not-cached-model"], "is not in the Hugging Face cache"),
])
def test_bad_config_gets_one_clear_message(compose, overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert message in str(info.value)


def test_folder_without_model_index_is_rejected(compose, tmp_path):
    with pytest.raises(ConfigError, match="no model_index.json"):
        validate(compose([f"model.path={tmp_path}"]))


def test_truncated_checkpoint_is_named(compose, cache_dir, tmp_path):
    import shutil

    from harness.synthetic import ensure_checkpoint

    folder = tmp_path / "flux"
    shutil.copytree(ensure_checkpoint("flux-tiny", cache_dir), folder)
    weights = next((folder / "transformer").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"transformer/diffusion_pytorch_model.safetensors is truncated"):
        validate(compose([f"model.path={folder}"]))
    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(ConfigError, match="too short for a safetensors header"):
        validate(compose([f"model.path={folder}"]))


def test_real_checkpoint_folder_validates(compose, cache_dir):
    from harness.synthetic import ensure_checkpoint

    folder = ensure_checkpoint("sdxl-tiny", cache_dir)
    cell = validate(compose(["model=sdxl-tiny", f"model.path={folder}"]))
    assert cell.checkpoint_path == str(folder) and cell.components == ["unet"]


def test_denoiser_resolves_per_family(compose):
    assert validate(compose(["model=sdxl-tiny"])).components == ["unet"]
    assert validate(compose(["engine.components=[denoiser,text_encoder_2]"])).components == \
        ["transformer", "text_encoder_2"]


def test_a_component_with_only_pickled_weights_is_refused_unread(compose, cache_dir, tmp_path):
    import pickle
    import shutil

    from harness.synthetic import ensure_checkpoint

    folder = tmp_path / "flux"
    shutil.copytree(ensure_checkpoint("flux-tiny", cache_dir), folder)
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match=r"component 'transformer' has only pickled weights "
                                          r"\(diffusion_pytorch_model.bin\).*safetensors only"):
        validate(compose([f"model.path={folder}"]))
    assert not marker.exists()
