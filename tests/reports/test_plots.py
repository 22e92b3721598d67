import math

from PIL import Image

from reports import plots
from tests.reports import samples


def P(label, mem, q, speed):
    return plots.Point(label, mem, q, speed)


def test_pareto_front_keeps_only_undominated_cells():
    points = [P("bf16", 33.0, math.inf, 2.0), P("int8", 22.0, 31.0, 2.6), P("int4", 16.0, 22.0, 1.5),
              P("worse-int8", 23.0, 30.0, 2.5),     # dominated by int8 on all three
              P("tie", 22.0, 31.0, 2.6),             # equal to int8: neither dominates
              P("no-quality", 10.0, None, 9.0)]      # incomplete: never on the front
    front = {p.label for p in plots.pareto_front(points)}
    assert front == {"bf16", "int8", "int4", "tie"}


def test_reference_counts_as_infinite_quality(tmp_path):
    records = samples.leaderboard(tmp_path)
    ref = plots.point(records[0])
    assert ref.quality_db == math.inf and ref.memory_gib == 33.5 and ref.steps_per_s == 2.0


def test_three_plots_per_model_and_device(tmp_path):
    out = plots.render(samples.leaderboard(tmp_path / "runs"), tmp_path / "plots")
    assert sorted((p.model, p.kind) for p in out) == sorted(
        (m, k) for m in ("flux-dev", "sdxl") for k in plots.KINDS)
    for p in out:
        with Image.open(p.path) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 200
            # Not a blank canvas: a plot has many colours.
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 20


def test_groups_without_ok_cells_get_no_plots(tmp_path):
    assert plots.render([samples.record("bnb", "nf4", "oom", error="x")], tmp_path) == []
