"""The lora group: composed and validated like every axis; bad input is one line, rc 2, nothing written."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.errors import ConfigError
from harness.validate import validate


def _file(tmp_path, shape_a=(4, 64), name="lora.safetensors"):
    path = tmp_path / name
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(*shape_a),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, str(path))
    return path


def test_lora_defaults_to_none_and_keeps_cell_keys_of_cells_without_one(compose):
    from harness import resume

    spec = validate(compose([]), check_environment=False)
    assert spec.lora == {"name": "none", "options": {}} and not spec.has_lora
    assert "lora=" not in spec.label()
    synthetic = validate(compose(["lora=synthetic"]), check_environment=False)
    assert synthetic.lora["options"] == {"rank": 16, "strength": 0.1, "scale": 1.0, "seed": 0, "convs": False,
                                         "fuse": False}
    keys = {resume.cell_key(validate(compose(o), check_environment=False), "cpu", {})
            for o in ([], ["lora=synthetic"], ["lora=synthetic", "lora.options.rank=64"])}
    assert len(keys) == 3
    assert synthetic.label().endswith("lora=synthetic r16")


def test_a_lora_file_is_resolved_hashed_and_part_of_the_cell_key(compose, tmp_path):
    from harness import resume

    path = _file(tmp_path)
    spec = validate(compose(["lora=file", f"lora.options.paths=[{path}]"]), check_environment=False)
    (described,) = spec.lora["files"]
    assert described["path"] == str(path.resolve()) and described["format"] == "diffusers"
    assert described["layers"] == 1 and described["rank"] == 4 and len(described["sha256"]) == 64
    key = resume.cell_key(spec, "cpu", {})
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 64),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, str(path))
    changed = validate(compose(["lora=file", f"lora.options.paths=[{path}]"]), check_environment=False)
    assert resume.cell_key(changed, "cpu", {}) != key


@pytest.mark.parametrize("overrides, message", [
    (["lora=synthetic", "lora.options.rank=0"], r"rank=0 is not valid: expected int in \[1, 1024\]"),
    (["lora=synthetic", "lora.options.rnak=4"], "Did you mean: rank"),
    (["lora=file"], "needs lora.options.paths"),
    (["lora=file", "lora.options.paths=[/nowhere/x.safetensors]"], "does not exist"),
    (["lora=file", "lora.options.paths=[/etc/hostname]"], "only .safetensors files"),
], ids=["rank-range", "typo", "no-paths", "missing-file", "not-safetensors"])
def test_bad_lora_input_is_one_clear_line(compose, overrides, message):
    from harness.compose import explain

    try:
        cfg = compose(overrides)
    except Exception as exc:  # noqa: BLE001 - composition errors are explained as the CLI does
        assert __import__("re").search(message, explain(exc)), explain(exc)
        return
    with pytest.raises(ConfigError, match=message):
        validate(cfg, check_environment=False)


def test_wrong_shapes_and_scales_are_refused(compose, tmp_path):
    bad = _file(tmp_path, shape_a=(4, 32), name="bad.safetensors")
    with pytest.raises(ConfigError, match="expected A"):
        validate(compose(["lora=file", f"lora.options.paths=[{bad}]"]), check_environment=False)
    good = _file(tmp_path)
    with pytest.raises(ConfigError, match="2 values for 1 files"):
        validate(compose(["lora=file", f"lora.options.paths=[{good}]", "lora.options.scales=[1.0,0.5]"]),
                 check_environment=False)


def test_an_unknown_lora_choice_gets_did_you_mean():
    from harness.compose import check_group_overrides

    with pytest.raises(ConfigError, match="Unknown lora 'synthetc'. Did you mean: synthetic"):
        check_group_overrides(["lora=synthetc"])


def test_a_wrong_lora_file_exits_2_with_one_line_and_writes_nothing(cli, tmp_path, store_path):
    bad = tmp_path / "wrong.safetensors"
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 64),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(32, 4)}, str(bad))
    done = cli("lora=file", f"lora.options.paths=[{bad}]")
    assert done.returncode == 2, done.stderr
    # (the quantization backends' import-time notices, when validation imports diffusers, are not the harness's)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]) and "Traceback" not in done.stderr
    assert "wrong.safetensors: layer transformer_blocks.0.attn.to_q is linear 64x64" in errors[0]
    assert not store_path.exists() and not (tmp_path / "outputs").exists()


def test_the_lora_reference_cell_is_bf16_with_the_same_lora_never_fused(compose):
    from harness import reference

    spec = validate(compose(["engine=sdnq", "lora=synthetic", "lora.options.fuse=true", "lora.options.rank=8"]),
                    check_environment=False)
    ref = reference.lora_spec_for(spec)
    assert (ref.engine, ref.dtype, ref.is_reference) == ("bf16", "bf16", True)
    assert ref.lora["options"]["rank"] == 8 and ref.lora["options"]["fuse"] is False
    assert spec.lora["options"]["fuse"] is True  # the cell keeps its own setting
    assert reference.lora_reference_key("k", spec.lora) == reference.lora_reference_key("k", ref.lora)
    assert reference.spec_for(spec).lora["name"] == "none"


def test_a_lora_on_a_family_it_does_not_apply_to_is_a_cell_that_ends_unsupported(compose):
    spec = validate(compose(["model=qwen-image-tiny", "lora=synthetic"]), check_environment=False)
    assert spec.has_lora and "LoRAs apply to the denoiser of a flux or sdxl model" in spec.lora["unsupported"]
    plain = validate(compose(["lora=synthetic"]), check_environment=False)
    assert "unsupported" not in plain.lora
