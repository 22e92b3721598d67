"""Reports rendered from stored result records: leaderboards, the error matrix, the offload table, the
nightly regression check, an HTML page with image grids and plots.

`reports.cli` (``python -m reports``) loads the store once (`reports.records.load`) and hands the records to
the report modules; each takes ``records: list[dict]`` and writes its files, none opens a store. Shared:
`records` (loading, grouping, cell labels), `columns` (the figures shown and their record paths),
`provenance` (what the results were measured on).
"""
