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


def _boxes(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def test_memory_legend_covers_no_bar_and_no_value(tmp_path):
    group = [r for r in samples.leaderboard(tmp_path / "runs") if r["model"] == "flux-dev"]
    fig = plots.draw("memory", group, "memory")
    renderer = _boxes(fig)
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in ax.patches]
    values = [t.get_window_extent(renderer) for t in ax.texts]
    assert bars and values
    assert not any(legend.overlaps(b) for b in bars + values)
    figure = fig.bbox
    assert all(figure.x0 <= v.x0 and v.x1 <= figure.x1 for v in values)  # the longest bar's value too


def test_tradeoff_labels_stay_inside_the_axes_clear_of_the_colour_bar(tmp_path):
    group = [r for r in samples.leaderboard(tmp_path / "runs") if r["model"] == "flux-dev"]
    single = [samples.record("bf16", "bf16", steps_per_s=2.0, peak=33.5)]
    for records in (group, single):
        fig = plots.draw("tradeoff", records, "tradeoff")
        renderer = _boxes(fig)
        ax, colour_bar = fig.axes[0], fig.axes[1].get_window_extent(renderer)
        inside = ax.get_window_extent(renderer)
        labels = [t for t in ax.texts if t.get_text()]
        assert any("reference" in t.get_text() for t in labels)
        for text in labels:
            box = text.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, \
                text.get_text()
            assert not box.overlaps(colour_bar), text.get_text()


def _crowded(tmp_path):
    """The nightly's shape: the reference far right, three int8 cells at one memory with close PSNRs."""
    return [samples.record("bf16", "bf16", steps_per_s=5.7, peak=33.9),
            samples.record("quanto", "int8", steps_per_s=4.3, peak=22.8, psnr=40.3),
            samples.record("sdnq", "int8", steps_per_s=5.4, peak=22.8, psnr=38.6),
            samples.record("torchao", "int8", steps_per_s=4.3, peak=22.8, psnr=34.7),
            samples.record("bnb", "nf4", steps_per_s=5.4, peak=18.0, psnr=22.1)]


def test_tradeoff_labels_clear_each_other_every_marker_and_the_legend(tmp_path):
    fig = plots.draw("tradeoff", _crowded(tmp_path), "tradeoff")
    renderer = _boxes(fig)
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == plots.POINT_LABEL]
    assert len(labels) == 5
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), labels[i].get_text()
    radius = plots.MARKER_RADIUS_PT * fig.dpi / 72
    centres = [ax.transData.transform(t.xy) for t in labels]
    for text, box in zip(labels, boxes):
        assert not any(plots._near(box, c, radius) for c in centres), text.get_text()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(b) for b in boxes)
    assert not any(legend.x0 <= x <= legend.x1 and legend.y0 <= y <= legend.y1 for x, y in centres)
    assert legend.y1 <= ax.get_window_extent(renderer).y0  # below the axes


def test_the_near_check_measures_distance_to_the_box():
    from matplotlib.transforms import Bbox

    box = Bbox([[10, 10], [20, 20]])
    assert plots._near(box, (15, 15), 1) and plots._near(box, (8, 15), 3)
    assert not plots._near(box, (5, 15), 3) and not plots._near(box, (23, 24), 4.9)
