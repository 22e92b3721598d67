"""The offload table: every mode side by side per cap, balanced offload's targets, markdown, CSV and HTML."""
from reports import offload_table as offload
from tests.reports.samples import record


def _cell(offload_mode, s_per_step, peak, cap, status="ok", engine="sdnq", dtype="int8"):
    r = record(engine, dtype, status, offload=offload_mode, steps_per_s=1 / s_per_step if s_per_step else None,
               peak=peak, error=None if status == "ok" else "CUDA out of memory")
    r["env"]["gpu_cap_gib"] = cap
    return r


def _records(balanced_s=0.3, model_status="ok"):
    out = []
    for cap in (24.0, 16.0):
        out += [_cell("balanced", balanced_s, cap - 4, cap), _cell("sequential", 3.0, 3.0, cap),
                _cell("group", 0.5, 5.0, cap),
                _cell("model", 0.35 if model_status == "ok" else None, 14.0, cap, status=model_status)]
    return out


def test_comparison_has_one_row_per_cap_and_every_mode():
    df = offload.comparison(_records())
    assert sorted(df["cap GiB"]) == [16.0, 24.0]
    row = df[df["cap GiB"] == 24.0].iloc[0]
    assert row["x vs sequential"] == 10.0 and row["x vs model"] == round(0.35 / 0.3, 2)
    assert row["balanced under cap"] and row["targets met"] == "yes"


def test_slower_than_model_offload_misses_the_target():
    df = offload.comparison(_records(balanced_s=0.4))
    assert set(df["targets met"]) == {"no"}


def test_within_the_run_to_run_spread_counts_as_fast_as_model_offload():
    assert set(offload.comparison(_records(balanced_s=0.35 * 1.005))["targets met"]) == {"yes"}
    assert set(offload.comparison(_records(balanced_s=0.35 * 1.02))["targets met"]) == {"no"}


def test_group_is_the_yardstick_where_model_offload_does_not_fit():
    df = offload.comparison(_records(balanced_s=0.45, model_status="oom"))
    row = df.iloc[0]
    assert row["vs"] == "group" and row["targets met"] == "yes"
    assert "oom" in offload.markdown(_records(model_status="oom"))


def test_group_on_streams_is_its_own_column_and_the_best_group_counts():
    recs = _records(balanced_s=0.45, model_status="oom")
    streamed = _cell("group", 0.4, 6.0, 24.0)
    streamed["offload_report"] = {"mode": "group", "use_stream": True}
    df = offload.comparison(recs + [streamed])
    row = df[df["cap GiB"] == 24.0].iloc[0]
    assert row["group+stream s/step"] == 0.4 and row["x vs group"] == round(0.4 / 0.45, 2)
    assert row["targets met"] == "no"  # slower than the faster group setting
    assert "group+stream" in offload.markdown(recs + [streamed])


def test_markdown_and_csv_carry_provenance_and_missing_cells(tmp_path):
    recs = [r for r in _records() if r["offload"] != "sequential"]
    paths = offload.render(recs, tmp_path)
    text = paths["offload_md"].read_text()
    assert "NVIDIA H200" in text and "not run" in text and "no sequential figure" in text
    assert "Synthetic random weights" in text
    assert paths["offload_csv"].read_text().startswith("model,")


def test_html_fragment_is_a_sortable_table_with_numbers_to_sort_by():
    frag = offload.to_html(_records(model_status="oom"))
    assert '<table class="sortable offload">' in frag and "oom" in frag
    assert 'data-sort="0.3"' in frag  # balanced s/step, sortable as a number
    assert offload.has_offload(_records()) and not offload.has_offload([_cell("none", 0.2, 30.0, None)])


def test_the_html_page_has_an_offload_section_only_with_offloaded_cells(tmp_path):
    from reports import html

    page = html.render(_records(), tmp_path / "a").read_text()
    assert 'id="offload-modes"' in page and 'href="#offload-modes"' in page
    plain = html.render([_cell("none", 0.2, 30.0, None)], tmp_path / "b").read_text()
    assert "offload-modes" not in plain
