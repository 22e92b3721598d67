"""The record figures the reports show, each defined once: short key, header, record path, number format.

A `Column`'s ``path`` is a dotted path into a record as `harness.record.Record.to_dict` writes it
(``metrics.steps_per_s``, ``quality.psnr_db``, ``env.device_name``); a test checks every path against the
record's dataclass fields. `TABLE` is the table of the leaderboard (markdown) and of the HTML page, `FRAME`
the leaderboard's CSV, and `figure_path` resolves the figures the regression check tracks.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from harness.record import Quality


@dataclass(frozen=True)
class Column:
    #: Name of the column in frames and CSV files, and the HTML table's ``data-key``.
    key: str
    #: Header shown in markdown and HTML tables.
    label: str
    #: Dotted record path the value is read from (for a derived column: the field it is derived from).
    path: str
    #: Format spec of a number in the HTML table (``.3f``); None for a text column.
    fmt: str | None = None
    #: For a column computed from the record rather than read at ``path``: ``record -> value``.
    derive: Callable[[dict], Any] | None = None

    @property
    def numeric(self) -> bool:
        return self.fmt is not None

    def get(self, record: dict):
        """The column's value in ``record`` (None where the record lacks it)."""
        return self.derive(record) if self.derive else lookup(record, self.path)


def lookup(record: dict, path: str):
    """The value at a dotted ``path`` of ``record``, or None where any step of it is missing."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _resolution(record: dict) -> str:
    work = record.get("workload") or {}
    return f"{work.get('width')}x{work.get('height')}"


def lora_label(record: dict) -> str:
    """The cell's LoRA in a few characters (`harness.lora.label`): ``none``, ``synthetic r16``, ``file x2``."""
    from harness.lora import label

    if (record.get("lora") or "none") == "none":
        return "none"
    return label((record.get("config") or {}).get("lora") or {"name": record["lora"]})


def floor_value(metric: str) -> Callable[[dict], Any]:
    """``record -> `` its noise floor's ``metric`` (None without a floor)."""
    return lambda record: (lookup(record, "quality.floor") or {}).get(metric)


def _deviation(block: dict, metric: str) -> float | None:
    """``metric`` of a quality block, a PSNR left null because the images are identical read as infinite."""
    value = block.get(metric)
    if value is None and metric == "psnr_db" and "identical" in str((block.get("unavailable") or {}).get(metric)):
        return float("inf")
    return value


#: Under a table with noise floors: how to read them.
FLOOR_NOTE = ("Noise floor: BF16 under the cell's compile / offload settings against eager BF16, the reference "
              "every cell is compared with. `within` = the cell is no further from eager BF16 than that floor "
              "(PSNR at least the floor's, LPIPS at most): its deviation cannot be told from what compile / "
              "offload cause on their own; `beyond` = the rest is the quantization's; `floor` = the floor cell.")

#: The metrics a deviation is read against its floor with (those the published comparisons report).
FLOOR_METRICS = ("psnr_db", "lpips")


def floor_verdict(record: dict) -> str | None:
    """How the cell's deviation from BF16 compares with its noise floor: ``floor`` (the cell is the floor
    cell), ``within`` (every metric of `FLOOR_METRICS` both have is no further from the reference than the
    floor's), ``beyond``, ``floor n/a`` (no figures of the floor); None for a cell without a floor."""
    from harness.floor import within

    floor = lookup(record, "quality.floor")
    if not floor:
        return None
    if floor.get("cell_key") and floor.get("cell_key") == record.get("cell_key"):
        return "floor"
    quality = record.get("quality") or {}
    verdicts = [within(_deviation(quality, m), _deviation(floor, m), m) for m in FLOOR_METRICS]
    known = [v for v in verdicts if v is not None]
    if not known:
        return "floor n/a"
    return "within" if all(known) else "beyond"


ENGINE = Column("engine", "engine", "engine")
DTYPE = Column("dtype", "dtype", "dtype")
MODE = Column("mode", "mode", "mode")
OFFLOAD = Column("offload", "offload", "offload")
COMPILE = Column("compile", "compile", "compile")
STATUS = Column("status", "status", "status")
LORA = Column("lora", "LoRA", "lora", derive=lora_label)
#: The LoRA figures of the table; the leaderboard leaves them out of a section without a LoRA cell.
LORA_FIGURES: tuple[Column, ...] = (
    Column("retention_cosine", "LoRA retention cos", "lora_report.retention_cosine", ".3f"),
    Column("lora_speed_ratio", "LoRA speed x", "lora_report.speed_ratio", ".3g"),
    Column("lora_load_s", "LoRA load s", "lora_report.load_s", ".3g"),
)

#: The noise-floor figures (`harness.floor`); the reports leave them out of a section without a floor.
FLOOR_FIGURES: tuple[Column, ...] = (
    Column("floor_psnr_db", "floor PSNR dB", "quality.floor", ".2f", derive=floor_value("psnr_db")),
    Column("floor_lpips", "floor LPIPS", "quality.floor", ".4f", derive=floor_value("lpips")),
    Column("vs_floor", "vs noise floor", "quality.floor", derive=floor_verdict),
)

#: The leaderboard table, in display order (markdown and HTML).
TABLE: tuple[Column, ...] = (
    ENGINE, DTYPE, MODE, OFFLOAD, COMPILE, LORA, STATUS,
    Column("weight_gib", "weights GiB", "metrics.weight_gib", ".3f"),
    Column("mem_after_load_gib", "mem after load GiB", "metrics.mem_after_load_gib", ".3f"),
    Column("peak_mem_gib", "peak GiB", "metrics.peak_mem_gib", ".3f"),
    Column("peak_reserved_gib", "peak reserved GiB", "metrics.peak_reserved_gib", ".3f"),
    Column("steps_per_s", "steps/s", "metrics.steps_per_s", ".3g"),
    Column("s_per_image", "s/image", "metrics.s_per_image", ".3g"),
    Column("first_call_s", "first call s", "metrics.first_call_s", ".3g"),
    Column("load_s", "load s", "metrics.load_s", ".3g"),
    Column("psnr_db", "PSNR dB", "quality.psnr_db", ".2f"),
    Column("ssim", "SSIM", "quality.ssim", ".4f"),
    Column("ms_ssim", "MS-SSIM", "quality.ms_ssim", ".4f"),
    Column("lpips", "LPIPS", "quality.lpips", ".4f"),
    Column("clip_score", "CLIP", "quality.clip_score", ".2f"),
    *FLOOR_FIGURES,
    *LORA_FIGURES,
)

#: The leaderboard CSV, in column order: where the cell ran, the table, then what provenance is made of.
FRAME: tuple[Column, ...] = (
    Column("model", "model", "model"),
    Column("device_name", "device", "env.device_name", derive=lambda r: lookup(r, "env.device_name") or "unknown"),
    *TABLE,
    Column("memory_kind", "memory kind", "metrics.memory_kind"),
    Column("synthetic", "synthetic weights", "quality.synthetic_weights"),
    Column("floor_ssim", "floor SSIM", "quality.floor", ".4f", derive=floor_value("ssim")),
    Column("floor_cell", "floor cell", "quality.floor", derive=floor_value("cell_key")),
    Column("lora_how", "LoRA applied", "lora_report.how"),
    Column("retention_psnr_db", "LoRA retention PSNR dB", "lora_report.retention_psnr_db", ".2f"),
    Column("retention_magnitude", "LoRA retention magnitude", "lora_report.retention_magnitude", ".3f"),
    Column("lora_unload_exact", "LoRA unload exact", "lora_report.unload_exact"),
    Column("error", "error", "error.message"),
    Column("steps", "steps", "workload.steps"),
    Column("resolution", "resolution", "workload", derive=_resolution),
    Column("versions", "versions", "env.versions", derive=lambda r: lookup(r, "env.versions") or {}),
    Column("git_sha", "harness", "env.git_sha"),
    Column("created", "created", "created"),
)

BY_KEY = {c.key: c for c in FRAME}
_QUALITY_FIELDS = {f.name for f in fields(Quality)}


def figure_path(name: str) -> str:
    """The record path of a measured figure named by its bare key, as ``conf/regression.yaml`` names them
    (``steps_per_s``, ``psnr_db``): a numeric column's path, else the `Quality` field of that name, else
    the `Metrics` one."""
    column = BY_KEY.get(name)
    if column is not None and column.numeric:
        return column.path
    return f"quality.{name}" if name in _QUALITY_FIELDS else f"metrics.{name}"
