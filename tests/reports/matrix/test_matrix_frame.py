"""The matrix frame: one row per combination (the newest record), every status, None for missing values."""
from reports import matrix
from reports.matrix import frame
from tests.reports.samples import MATRIX, MATRIX_KNOWN, matrix_record


def _row(df, engine, dtype, offload, compile="none"):
    rows = df[(df.engine == engine) & (df.dtype == dtype) & (df.offload == offload) & (df.compile == compile)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_one_row_per_combination_with_status_type_and_first_line():
    older = matrix_record("bf16", "bf16", "none", "error", "an old failure", created="2026-11-20T10:00:00")
    df = matrix.matrix_frame([older, *MATRIX], MATRIX_KNOWN)
    assert len(df) == len(MATRIX)  # the newest record of a combination wins
    assert set(df.status) == {"ok", "unsupported", "error", "oom", "timeout", "crashed"}
    assert _row(df, "bf16", "bf16", "none").status == "ok"
    quanto = _row(df, "quanto", "int8", "sequential")
    assert quanto.error_type == "RuntimeError" and quanto.message.startswith("Expected all tensors")
    assert _row(df, "torchao", "int8", "sequential").status == "timeout"
    assert _row(df, "sdnq", "int8", "balanced").error_type == "SIGSEGV"
    assert df.iloc[0].engine == "bf16"  # the reference first
    assert _row(df, "bf16", "bf16", "none").error_group is None  # missing values are None, not NaN


def test_offload_and_compile_modes_in_their_natural_order():
    df = matrix.matrix_frame(MATRIX, MATRIX_KNOWN)
    bf16 = df[df.engine == "bf16"]
    assert list(bf16.offload) == ["none", "sequential"]
    (flux,) = [part for _, _, _, part in frame.sections(MATRIX, df)]
    assert [comp for comp, _, _ in frame.pivots(flux)] == ["none", "regional"]
    _, offloads, rows = next(frame.pivots(flux))
    assert offloads == ["none", "model", "sequential", "group", "balanced"]
    assert list(rows)[0] == "bf16:bf16"


def test_empty_matrix():
    assert matrix.matrix_frame([], MATRIX_KNOWN).empty
