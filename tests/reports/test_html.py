"""The report page: self-contained, one sortable table per model x device with provenance, escaped values,
the error matrix section, and no machine paths."""
import re
import types

from reports import grid, html, plots
from reports.provenance import SYNTHETIC_WARNING
from tests.reports import samples


def _render(tmp_path, records=None):
    records = records if records is not None else samples.leaderboard(tmp_path / "runs")
    return html.render(records, tmp_path / "out", grids=grid.render(records, tmp_path / "out" / "grids", tile=64),
                       plots=plots.render(records, tmp_path / "out" / "plots")).read_text()


def test_page_is_self_contained(tmp_path):
    page = _render(tmp_path)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Nothing is fetched: no external scripts, styles, images or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == 4 + 6 and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_page_has_a_sortable_table_per_model_and_device_with_provenance(tmp_path):
    page = _render(tmp_path)
    assert page.count('<table class="sortable leaderboard">') == 2
    assert "<h2>flux-dev on NVIDIA H200</h2>" in page and "<h2>sdxl on NVIDIA H200</h2>" in page
    assert SYNTHETIC_WARNING in page and 'id="synthetic-warning"' in page
    for fact in ("1024x1024 px", "<dd>28</dd>", "torch 2.11.0", "abc123", "synthetic (random) weights",
                 "570.1 / 12.8"):
        assert fact in page, fact
    flux = page.split("<h2>sdxl")[0]
    # ok cells first, fastest first; the oom cell last and listed under failures with its message.
    assert flux.index(">2.6<") < flux.index(">2<") < flux.index(">1.5<") < flux.index(">oom<")
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in flux
    assert 'data-sort="31.5"' in flux and "addEventListener('click'" in page


def test_real_weights_carry_no_warning(tmp_path):
    records = [samples.record("bf16", "bf16", steps_per_s=1.0, synthetic=False)]
    page = _render(tmp_path, records)
    assert SYNTHETIC_WARNING not in page and "real checkpoint" in page


def test_values_are_escaped(tmp_path):
    records = [samples.record("bnb", "nf4", "error", error="<script>alert(1)</script>")]
    page = _render(tmp_path, records)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_error_matrix_section_is_reports_matrix_fragment(tmp_path, monkeypatch):
    assert "<div class=\"error-matrix\">" in _render(tmp_path)
    fake = types.SimpleNamespace(
        to_html=lambda records, known=None: f"<table id='matrix'><tr><td>{len(records)} cells</td></tr></table>")
    monkeypatch.setattr(html, "matrix", fake)
    assert "<table id='matrix'><tr><td>6 cells</td></tr></table>" in _render(tmp_path)


def test_page_names_the_store_without_the_machines_folders(tmp_path):
    from reports.records import source_label

    location = tmp_path / "deep" / "folder" / "results.sqlite"
    records = [samples.record("bf16", "bf16", steps_per_s=1.0)]
    page = html.render(records, tmp_path / "out", source=source_label(location)).read_text()
    assert "from results.sqlite;" in page and str(location.parent) not in page


def test_page_never_prints_the_folders_of_a_store_path_it_is_given(tmp_path):
    location = tmp_path / "machine" / "home" / "results.sqlite"
    records = [samples.record("bf16", "bf16", steps_per_s=1.0)]
    page = html.render(records, tmp_path / "out", source=str(location)).read_text()
    assert "from results.sqlite;" in page and str(location.parent) not in page
    url = html.render(records, tmp_path / "out", source="postgresql://bench:secret@db.lan/results").read_text()
    assert "secret" not in url and "db.lan/results" in url


def test_grid_captions_print_the_difference_scale(tmp_path):
    page = _render(tmp_path)
    flux = page.split("<h2>sdxl")[0]
    assert "|engine - BF16| per pixel below" in flux
    assert flux.count("difference colour scale 0 .. ") == 2  # one per grid (two images)
