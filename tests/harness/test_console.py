"""What the user sees: plain progress lines off a terminal, the live line's text, the sweep summary."""
import io

from harness.console import Progress, result_line, sweep_summary
from harness.runner import Outcome


def _record(status, **error):
    return {"status": status, "model": "flux-tiny", "engine": "sdnq", "dtype": "int8", "offload": "none",
            "compile": "none", "error": error or None,
            "metrics": {"steps_per_s": 12.3456, "s_per_image": 0.98765, "weight_gib": 0.00123456,
                        "peak_mem_gib": 1.23456},
            "quality": {"psnr_db": 44.444}}


def test_plain_progress_prints_stages_not_steps():
    out = io.StringIO()
    progress = Progress(total=3, stream=out, live=False)
    progress.start("model=flux-tiny engine=sdnq")
    for stage in ("set-up", "load + quantize", "first call (1 of 2), before its first step",
                  "first call (1 of 2), step 1 of 4 done", "compare"):
        progress.stage(stage)
    progress.end()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[cell 1/3] model=flux-tiny engine=sdnq"
    assert [line.split("   ")[1].split(" (at")[0] for line in lines[1:]] == [
        "set-up", "load + quantize", "first call (1 of 2), before its first step", "compare"]


def test_the_live_line_names_position_cell_stage_and_step():
    progress = Progress(total=5, stream=io.StringIO(), live=False)
    progress.start("flux-tiny sdnq:int8")
    progress.stage("timed call (2 of 2), step 3 of 4 done")
    text = progress.__rich__().plain
    assert text.startswith("[cell 1/5] flux-tiny sdnq:int8") and "step 3 of 4 done" in text and text.endswith(" s")


def test_result_line_has_three_significant_digits():
    line = result_line(_record("ok"))
    assert "steps/s=12.3 " in line and "s/image=0.988 " in line and "psnr=44.4 dB" in line


def test_sweep_summary_counts_statuses_and_names_failed_stages():
    outcomes = [Outcome(_record("ok")), Outcome(_record("error", type="RuntimeError", message="boom",
                                                        stage="load + quantize")),
                Outcome(None, skipped="stored")]
    text = sweep_summary(outcomes, skipped=4)
    assert text.splitlines()[0] == ("sweep: 2 cells run (1 ok, 1 error); 1 already stored; 4 combinations "
                                    "outside an engine's dtypes skipped")
    assert "stage: load + quantize - RuntimeError: boom" in text


def test_result_line_names_the_lora_of_a_lora_cell():
    plain = _record("ok")
    with_lora = {**plain, "lora": "synthetic",
                 "config": {"lora": {"name": "synthetic", "options": {"rank": 64, "fuse": False}}}}
    assert "lora=" not in result_line(plain)
    assert " lora=synthetic r64 " in result_line(with_lora)
