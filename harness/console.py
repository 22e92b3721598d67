"""What the user sees: result lines, the summary table of one record, refusals and harness failures."""
from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path


def reject(message: str) -> None:
    """Rejected input: one line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def harness_failure(exc: BaseException, folder: str | None = None) -> None:
    """The harness itself failed: the traceback goes to a log file, the user gets one line and its path."""
    base = Path(folder) if folder and Path(folder).is_dir() else Path(tempfile.gettempdir())
    log = base / f"harness-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        log.write_text("".join(traceback.format_exception(exc)))
        where = f" (log: {log})"
    except OSError:
        where = ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"error: the harness failed: {type(exc).__name__}: {first}{where}", file=sys.stderr)
    sys.exit(1)


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def result_line(record: dict) -> str:
    """One line per finished cell, figures to 3 significant digits."""
    m, q = record["metrics"], record["quality"]
    cell = (f"{record['model']} {record['engine']}:{record['dtype']} offload={record['offload']} "
            f"compile={record['compile']}")
    if record["status"] != "ok":
        err = record.get("error") or {}
        return f"[{record['status']}] {cell}: {err.get('type')}: {err.get('message')} (stage: {err.get('stage')})"
    return (f"[ok] {cell} steps/s={_fmt(m['steps_per_s'])} s/image={_fmt(m['s_per_image'])} "
            f"weights={_fmt(m['weight_gib'])} GiB peak={_fmt(m['peak_mem_gib'])} GiB "
            f"psnr={_fmt(q.get('psnr_db'))} dB")


def summary_table(record: dict) -> str:
    """A short human table of one record."""
    m, q = record["metrics"], record["quality"]

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    rows = [("status", record["status"]),
            ("cell", f"{record['model']} / {record['engine']}:{record['dtype']} / offload={record['offload']} "
                     f"/ compile={record['compile']}")]
    if record.get("error"):
        rows.append(("error", f"{record['error']['type']}: {record['error']['message']}"))
    mem = "GPU" if m.get("memory_kind") == "cuda" else "host RSS"
    rows += [("weights (quantized components)", f"{fmt(m['weight_gib'], '.4f')} GiB "
              f"(stored BF16: {fmt(m.get('reference_weight_gib'), '.4f')} GiB)"),
             (f"memory after load ({mem})", f"{fmt(m['mem_after_load_gib'])} GiB"),
             (f"peak during generation ({mem})", f"{fmt(m['peak_mem_gib'])} GiB"),
             ("load", f"{fmt(m['load_s'], '.2f')} s"),
             ("first call", f"{fmt(m['first_call_s'], '.2f')} s"),
             ("denoising speed", f"{fmt(m['steps_per_s'], '.2f')} steps/s"),
             ("end to end", f"{fmt(m['s_per_image'], '.2f')} s/image"),
             ("PSNR vs BF16", f"{fmt(q.get('psnr_db'), '.2f')} dB"),
             ("SSIM / MS-SSIM", f"{fmt(q.get('ssim'), '.4f')} / {fmt(q.get('ms_ssim'), '.4f')}"),
             ("LPIPS / CLIP", f"{fmt(q.get('lpips'), '.4f')} / {fmt(q.get('clip_score'), '.2f')}")]
    for metric, why in (q.get("unavailable") or {}).items():
        rows.append((f"  {metric} unavailable", why))
    if q.get("note"):
        rows.append(("note", q["note"]))
    rows.append(("result", str(Path(record["run_dir"]) / "result.json")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
