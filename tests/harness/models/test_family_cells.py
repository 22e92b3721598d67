"""Every tiny family through the whole harness on a CPU (the family sweep, conftest.py): BF16, one engine
of each kind, an offload mode and regional compile. A cell ends `ok` with really quantized weights, or
`unsupported` with its reason; never `error` (except the library limits families.CPU_LIMITS names)."""
import pytest

from tests.harness.models.families import COMPILE_CELLS, CPU_LIMITS, ENGINE_CELLS, EXTRA_CELLS, FAMILIES

pytestmark = pytest.mark.timeout(60, func_only=True)  # the sweep is fixture work, bounded on its own

ENGINE_IDS = [(m, c) for m in FAMILIES for c in ENGINE_CELLS if c != "balanced"] + list(EXTRA_CELLS)


@pytest.fixture(scope="module")
def records(family_sweep):
    return family_sweep.records()


@pytest.mark.parametrize("model, cell", ENGINE_IDS, ids=[f"{m}-{c}" for m, c in ENGINE_IDS])
def test_engine_cell_runs_and_quantizes(records, model, cell):
    record = records[(model, cell)]
    if (model, cell) in CPU_LIMITS:
        assert record["status"] == "error" and CPU_LIMITS[(model, cell)] in record["error"]["message"]
        pytest.xfail(f"known library limit on a CPU: {CPU_LIMITS[(model, cell)]}")
    assert record["status"] == "ok", record["error"]
    m = record["metrics"]
    assert m["steps_per_s"] > 0 and m["s_per_image"] > 0 and m["weight_gib"] > 0
    components = record["engine_report"]["components"]
    if cell == "bf16":
        assert set(components) == {"transformer"}
        assert m["weight_gib"] == pytest.approx(m["reference_weight_gib"], rel=0.01)
        return
    assert all(c["quantized_modules"] > 0 for c in components.values()), components
    # At tiny widths scales and unquantized norms weigh much: smaller than BF16 is what holds here.
    assert m["weight_gib"] < m["reference_weight_gib"], m
    assert record["quality"]["psnr_db"] is not None and record["quality"]["psnr_db"] > 12  # 4-bit: ~19 dB
    assert record["quality"]["synthetic_weights"] is True
    if cell.startswith("sdnq"):  # text encoders of every transformers class, quantized too
        assert set(components) == {"transformer", "text_encoder"}


@pytest.mark.parametrize("model", FAMILIES)
def test_offload_on_a_cpu_is_unsupported_with_its_reason(records, model):
    record = records[(model, "balanced")]
    assert record["status"] == "unsupported" and "CUDA" in record["error"]["reason"]


def test_regional_compile_runs_the_repeated_blocks_or_says_why_not(records):
    compiled = records[("qwen-image-tiny", "regional")]
    assert compiled["status"] == "ok", compiled["error"]
    assert compiled["compile_report"] == {"mode": "regional", "blocks": ["QwenImageTransformerBlock"], "fullgraph": False,
                                          "dynamic": False}
    sd3 = records[("sd35-large-tiny", "regional")]
    assert sd3["status"] == "unsupported"
    assert "SD3Transformer2DModel declares no repeated blocks" in sd3["error"]["reason"]
    assert set(COMPILE_CELLS) == {("qwen-image-tiny", "regional"), ("sd35-large-tiny", "regional")}


def test_video_quality_is_per_frame(records):
    """Wan's cells compare every frame (5 per video) with the BF16 reference's same frame."""
    record = records[("wan22-ti2v-5b-tiny", "sdnq-int8")]
    assert record["config"]["model"]["frames"] == 5
    assert record["metrics"]["n_timed_calls"] == 1 and record["quality"]["ssim"] is not None
