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


def harness_failure(exc: BaseException, folder: str | None = None, exit: bool = True) -> str:
    """The harness itself failed: the traceback goes to a log file, the user gets one line and its path;
    the process exits with code 1 unless ``exit`` is off (a sweep goes on), and the line is returned."""
    base = Path(folder) if folder and Path(folder).is_dir() else Path(tempfile.gettempdir())
    log = base / f"harness-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        log.write_text("".join(traceback.format_exception(exc)))
        where = f" (log: {log})"
    except OSError:
        where = ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"the harness failed: {type(exc).__name__}: {first}{where}"
    print(f"error: {line}", file=sys.stderr)
    if exit:
        sys.exit(1)
    return line


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def lora_label(record: dict) -> str:
    """`` lora=synthetic r16`` (see `harness.lora.label`) for a cell with a LoRA, else ""."""
    from harness.lora import label

    lora = (record.get("config") or {}).get("lora") or {"name": record.get("lora") or "none"}
    text = label(lora)
    return "" if text == "none" else f" lora={text}"


def result_line(record: dict) -> str:
    """One line per finished cell, figures to 3 significant digits."""
    m, q = record["metrics"], record["quality"]
    cell = (f"{record['model']} {record['engine']}:{record['dtype']} offload={record['offload']} "
            f"compile={record['compile']}{lora_label(record)}")
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
                     f"/ compile={record['compile']}{lora_label(record)}")]
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


class Progress:
    """Where the cells of this process are, while they run: sweep position ``cell i/N``, the cell, its stage,
    the denoising step and the elapsed time. On a terminal one live line (rich) redrawn in place; otherwise
    (a pipe, a log file, CI) one plain line per stage, steps left out. Written to stderr, so stdout keeps
    only results."""

    def __init__(self, total: int | None = None, stream=None, live: bool | None = None):
        import os

        self.stream = stream or sys.stderr
        self.total = total
        self.index = 0
        interactive = self.stream.isatty() and not os.environ.get("CI")
        self.live_mode = interactive if live is None else live
        self._live = None
        self._cell = ""
        self._stage = ""
        self._started = self._stage_since = time.perf_counter()

    def _position(self) -> str:
        return f"cell {self.index}/{self.total}" if self.total else f"cell {self.index}"

    def start(self, label: str) -> None:
        self.index += 1
        self._cell, self._stage = label, "starting"
        self._started = self._stage_since = time.perf_counter()
        if self.live_mode:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                self.live_mode = False
            else:
                self._live = Live(self, console=Console(file=self.stream), refresh_per_second=4, transient=True)
                self._live.start()
                return
        print(f"[{self._position()}] {label}", file=self.stream, flush=True)

    def stage(self, name: str) -> None:
        step = ", step " in name
        if not step:
            self._stage_since = time.perf_counter()
        self._stage = name
        if self._live is None and not step:
            print(f"[{self._position()}]   {name} (at {time.perf_counter() - self._started:.1f} s)",
                  file=self.stream, flush=True)

    def end(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __rich__(self):
        from rich.text import Text

        elapsed = time.perf_counter() - self._started
        return Text.assemble((f"[{self._position()}] ", "bold"), (self._cell, "cyan"), "  ",
                             (self._stage, "yellow"), f"  {elapsed:.0f} s")


def sweep_summary(outcomes: list, skipped: int) -> str:
    """The end of a sweep: counts per status and every cell that did not end ok, with its stage."""
    from collections import Counter

    records = [o.record for o in outcomes if o.record is not None]
    counts = Counter(r["status"] for r in records)
    stored_before = sum(1 for o in outcomes if o.skipped)
    head = ", ".join(f"{counts[s]} {s}" for s in ("ok", "unsupported", "error", "oom", "timeout", "crashed")
                     if counts[s])
    lines = [f"sweep: {len(records)} cells run ({head or 'none'}); {stored_before} already stored; "
             f"{skipped} combinations outside an engine's dtypes skipped"]
    for r in records:
        if r["status"] != "ok":
            err = r.get("error") or {}
            lines.append(f"  [{r['status']}] {r['model']} {r['engine']}:{r['dtype']} offload={r['offload']} "
                         f"compile={r['compile']} - stage: {err.get('stage')} - {err.get('type')}: "
                         f"{err.get('message')}")
    return "\n".join(lines)
