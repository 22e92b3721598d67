"""Run-to-run spread in the reports: read from records, shown in the leaderboard and on the page, and the
regression check's noise allowance."""
from harness.measure import spread as measured
from reports import html, leaderboard, spread
from tests.reports import samples


def _with_spread(record, speeds):
    record["metrics"]["spread"] = {"steps_per_s": measured(speeds),
                                   "s_per_image": measured([28 / s for s in speeds])}
    return record


def test_a_record_without_three_repeats_shows_no_spread():
    plain = samples.record("bf16", "bf16", steps_per_s=2.0)
    assert spread.of(plain, "steps_per_s") is None and spread.markdown([plain]) == [] and spread.to_html([plain]) == ""
    broken = samples.record("bf16", "bf16", steps_per_s=2.0)
    broken["metrics"]["spread"] = {"steps_per_s": {"min": 1.0, "median": "fast"}}
    assert spread.of(broken, "steps_per_s") is None and spread.text(None) == "-"


def test_leaderboard_and_page_show_median_range_and_iqr(tmp_path):
    fast = _with_spread(samples.record("torchao", "int8", steps_per_s=2.6), [2.5, 2.6, 2.7, 2.8, 2.6])
    slow = _with_spread(samples.record("bf16", "bf16", steps_per_s=2.0), [1.9, 2.0, 2.1])
    plain = samples.record("bnb", "nf4", steps_per_s=3.0)
    assert spread.text(spread.of(fast, "steps_per_s")) == "2.6 [2.5 .. 2.8], IQR 0.2"
    board = leaderboard.markdown([plain, slow, fast])
    table = board[board.index("Run-to-run spread"):]
    # one row per cell that has a spread, fastest first; the cell without one is not listed
    assert table.index("| torchao:int8 | 2.6 [2.5 .. 2.8], IQR 0.2 |") < table.index("| bf16:bf16 | 2 [1.9 .. 2.1]")
    assert "bnb:nf4 |" not in table.split("\n\n")[1]
    assert "| 5 |" in table and "| 3 |" in table  # timed calls
    page = html.render([plain, slow, fast], tmp_path).read_text()
    assert '<table class="spread">' in page and "2.6 [2.5 .. 2.8], IQR 0.2" in page


def test_allowance_is_both_nights_interquartile_ranges_added():
    before = _with_spread(samples.record("bf16", "bf16"), [9.0, 10.0, 12.0])        # 3 values: IQR = range = 3
    tonight = _with_spread(samples.record("bf16", "bf16"), [8.0, 8.5, 9.0, 9.5, 10.0])  # q1 8.25, q3 9.75
    assert spread.of(tonight, "steps_per_s")["iqr"] == 1.5
    assert spread.allowance(before, tonight, "steps_per_s") == 4.5
    b, t = spread.of(before, "s_per_image"), spread.of(tonight, "s_per_image")
    assert spread.allowance(before, tonight, "s_per_image") == b["iqr"] + t["iqr"]
    plain = samples.record("bf16", "bf16")
    assert spread.allowance(before, plain, "steps_per_s") == 3.0  # one night's spread only
    assert spread.allowance(plain, plain, "steps_per_s") == 0.0
    assert spread.allowance(before, tonight, "peak_mem_gib") == 0.0
