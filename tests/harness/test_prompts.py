"""The shipped prompt set and the workload options that slice it; the quality experiments."""
import pytest

from harness import prompts
from harness.errors import ConfigError
from harness.validate import validate


def test_the_quality_set_is_a_few_hundred_distinct_prompts():
    every = prompts.load("quality")
    assert 200 <= len(every) <= 400 and len(set(every)) == len(every)
    assert any('"' in p for p in every)  # text rendering is among the subjects


def test_the_quality_workload_takes_the_first_32_and_a_count_selects_more(compose):
    every = prompts.load("quality")
    spec = validate(compose(["workload=quality"]), check_environment=False)
    assert spec.workload["prompts"] == list(every[:32])
    assert spec.workload["prompt_set"] == "quality" and spec.workload["prompt_count"] == 32
    five = validate(compose(["workload=quality", "workload.prompt_count=5"]), check_environment=False)
    assert five.workload["prompts"] == list(every[:5])
    whole = validate(compose(["workload=quality", "workload.prompt_count=null"]), check_environment=False)
    assert len(whole.workload["prompts"]) == len(every)


@pytest.mark.parametrize("overrides, message", [
    (["workload=quality", "workload.prompt_count=0"], "prompt_count must be between 1"),
    (["workload=quality", "workload.prompt_count=100000"], "prompt_count must be between 1"),
    (["workload=quality", "workload.prompt_set=nope"], "not a shipped prompt set"),
    (["workload=quality", "workload.prompt_set=../x"], "not a safe name"),
    (["workload=quality", "workload.prompts=[a cat]"], "replaces workload.prompts"),
    (["workload.prompt_count=3"], "needs workload.prompt_set"),
], ids=["zero", "too-many", "unknown-set", "unsafe-name", "both", "count-alone"])
def test_bad_prompt_options_are_rejected(compose, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(overrides), check_environment=False)


def test_workloads_without_a_set_keep_their_cell_keys(compose):
    spec = validate(compose(["workload=tiny"]), check_environment=False)
    assert "prompt_set" not in spec.workload and "prompt_count" not in spec.workload


@pytest.mark.parametrize("experiment, model, steps, guidance", [
    ("quality-flux", "flux-dev", 50, 3.5), ("quality-sdxl", "sdxl", 30, 5.0)])
def test_quality_experiments_run_the_published_protocol(experiment, model, steps, guidance):
    from harness.compose import plan

    out = plan([f"+experiment={experiment}"])
    assert {(s.model["name"], s.workload["steps"], s.workload["height"], s.workload["width"],
             s.model["guidance_scale"], len(s.workload["prompts"])) for s in out.specs} == {
        (model, steps, 1024, 1024, guidance, 32)}
    engines = {(s.engine, s.dtype) for s in out.specs}
    assert {("bf16", "bf16"), ("torchao", "int8dq"), ("bnb", "nf4"), ("sdnq", "int8")} <= engines
    assert all(s.metrics["lpips"] and s.metrics["psnr"] and s.metrics["ssim"] for s in out.specs)
