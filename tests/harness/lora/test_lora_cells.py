"""Every engine x a synthetic LoRA on flux-tiny and sdxl-tiny, end to end through the CLI: ok with a retention
figure and an exact unload, or unsupported with the engine's reason; the reports show the LoRA axis."""
import pytest

from tests.harness.lora.conftest import ENGINES, MODELS

#: 8-bit weight types: every one must keep more of the LoRA's effect than the 4-bit bnb nf4.
EIGHT_BIT = {"sdnq": "int8", "torchao": "int8", "quanto": "int8", "gguf": "q8_0"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_takes_a_synthetic_lora_or_says_why(lora_sweep, engine, model):
    records, _, _ = lora_sweep
    r = records[(model, engine)]
    assert r["lora"] == "synthetic"
    assert r["config"]["lora"]["options"]["rank"] == 16
    if r["status"] == "unsupported":
        assert len(r["error"]["reason"]) > 40 and r["lora_report"] is None
        assert engine in ("nncf", "layerwise")  # the two engines peft cannot adapt (tests/engines/test_lora_refusals.py)
        return
    assert r["status"] == "ok", r["error"]
    lora = r["lora_report"]
    assert lora["how"] == "adapter" and lora["unload_exact"] is True and lora["unload_difference"] == []
    assert lora["lora_layers"] > 10 and lora["load_s"] > 0
    assert lora["on_quantized_layers"] == (0 if engine == "bf16" else lora["lora_layers"])
    assert lora["steps_per_s_without"] > 0 and lora["speed_ratio"] > 0
    assert lora["bf16_delta_rms"] > 0.01  # the LoRA visibly changes the BF16 images
    assert 0.5 < lora["retention_cosine"] <= 1.0 and 0.5 < lora["retention_magnitude"] < 2.0
    if engine == "bf16":
        assert lora["retention_cosine"] == pytest.approx(1.0)
    else:
        assert lora["retention_psnr_db"] > 15
    assert r["quality"]["reference"] == lora["reference"]


@pytest.mark.parametrize("model", MODELS)
def test_eight_bit_engines_retain_more_than_four_bit(lora_sweep, model):
    records, _, _ = lora_sweep
    nf4 = records[(model, "bnb")]
    assert nf4["dtype"] == "nf4"
    four = nf4["lora_report"]["retention_cosine"]
    for engine, dtype in EIGHT_BIT.items():
        r = records[(model, engine)]
        assert r["dtype"] == dtype
        assert r["lora_report"]["retention_cosine"] > four + 0.05, (engine, four)


def test_the_bf16_lora_reference_is_cached_beside_the_plain_one(lora_sweep):
    from harness import reference

    records, _, cache = lora_sweep
    key = records[("flux-tiny", "sdnq")]["lora_report"]["reference"]
    base, with_lora = reference.load_lora(str(cache), key)
    assert len(base) == len(with_lora) == 1 and not (base[0] == with_lora[0]).all()


def test_reports_show_the_lora_column_and_axis(lora_sweep):
    from reports import leaderboard, matrix
    from harness.record import Record

    records, _, _ = lora_sweep
    rows = [Record.from_dict(r).to_dict() for r in records.values()]
    board = leaderboard.markdown(rows)
    assert "| LoRA " in board and "LoRA retention cos" in board and "synthetic r16" in board
    text = matrix.to_markdown(rows)
    assert "| sdnq:int8 lora=synthetic r16 | ok |" in text
    assert "nncf:int8_sym offload=none compile=none lora=synthetic r16" in text


def test_a_board_without_lora_cells_has_no_lora_figures(lora_sweep):
    from reports import leaderboard

    records, _, _ = lora_sweep
    plain = {**records[("flux-tiny", "sdnq")], "lora": "none", "lora_report": None}
    assert "LoRA retention" not in leaderboard.markdown([plain])


def test_the_generation_without_the_lora_and_its_loading_are_work_not_overhead():
    from types import SimpleNamespace

    from harness.runner import harness_overhead

    metrics = SimpleNamespace(load_s=2.0, first_call_s=1.0, s_per_image=0.5, n_timed_calls=2, overhead={})
    lora = SimpleNamespace(load_s=0.25, first_call_s_without=0.75, s_per_image_without=0.5)
    plain = harness_overhead(SimpleNamespace(metrics=metrics, lora_report=None), 10.0)
    with_lora = harness_overhead(SimpleNamespace(metrics=metrics, lora_report=lora), 10.0)
    assert plain == 10.0 - (2.0 + 1.0 + 2 * 0.5)
    assert with_lora == plain - (0.25 + 0.75 + 2 * 0.5)
