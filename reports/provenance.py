"""What a set of results was measured on, for every report: device, versions, weights, workload, GPU cap.

`summary(records)` is the provenance of one group of records (one report section, see
`reports.records.groups`) as ordered ``label -> text`` pairs; the reports only lay it out (`markdown` for
the markdown reports, a definition list on the HTML page, `one_line` in figure footers).
"""
from __future__ import annotations

from collections import defaultdict

from reports.records import device_of

SYNTHETIC_WARNING = ("Synthetic random weights: the quality columns (PSNR, SSIM, MS-SSIM) measure numerical "
                     "deviation from the BF16 output of the same model, not image quality.")


def is_synthetic(records: list[dict]) -> bool:
    """Whether any of the records ran on synthetic (random) weights."""
    return any((r.get("quality") or {}).get("synthetic_weights") for r in records)


def _joined(items) -> str:
    return ", ".join(sorted({str(i) for i in items if i is not None and i != ""}))


def _versions(envs: list[dict]) -> str:
    versions: dict[str, set] = defaultdict(set)
    for env in envs:
        for pkg, version in (env.get("versions") or {}).items():
            if version and version != "not installed":
                versions[pkg].add(str(version))
    return ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items())) or "-"


def gpu_cap(records: list[dict]) -> str | None:
    """The GPU memory caps the cells ran under (``0.46 of the card = 64.3 GiB per cell``), None if uncapped.
    A cap given as a fraction of the card is listed with its GiB once a record knew them; caps given in GiB
    (``run.gpu_memory_gib``) are listed apart."""
    by_fraction: dict = {}  # fraction of the card -> GiB (None until a record that knew it is seen)
    gib_only: set = set()
    for r in records:
        fraction = ((r.get("config") or {}).get("run") or {}).get("gpu_memory_fraction")
        gib = (r.get("env") or {}).get("gpu_cap_gib")
        if fraction is not None:
            by_fraction[fraction] = by_fraction.get(fraction) or gib
        elif gib is not None:
            gib_only.add(gib)
    if not by_fraction and not gib_only:
        return None
    caps = [f"{f:g} of the card" + (f" = {g:g} GiB" if g else "") for f, g in sorted(by_fraction.items())]
    return ", ".join(caps + [f"{g:g} GiB" for g in sorted(gib_only)]) + " per cell"


def summary(records: list[dict]) -> dict[str, str]:
    """Provenance of one group of records, as ``label -> text`` in display order. ``GPU memory cap`` only
    when a cell ran capped, ``warning`` (`SYNTHETIC_WARNING`) only for synthetic weights."""
    envs = [r.get("env") or {} for r in records]
    work = [r.get("workload") or {} for r in records]
    kinds = {(r.get("metrics") or {}).get("memory_kind") for r in records} - {None}
    created = sorted(str(r["created"]) for r in records if r.get("created"))
    sizes = _joined(f"{w.get('width')}x{w.get('height')}" for w in work if w.get("width"))
    info = {
        "device": _joined(device_of(r) for r in records),
        "memory": "GPU (torch.cuda allocated / reserved)" if kinds == {"cuda"} else
                  "host RSS (no GPU)" if kinds == {"host_rss"} else ", ".join(sorted(kinds)) or "-",
        "driver / CUDA": _joined(f"{e.get('driver') or '-'} / {e.get('cuda') or '-'}" for e in envs),
        "weights": "synthetic (random) weights" if is_synthetic(records) else "real checkpoint",
        "resolution": f"{sizes} px" if sizes else "-",
        "steps": ", ".join(str(s) for s in sorted({w.get("steps") for w in work if w.get("steps") is not None})) or "-",
        "prompts x seeds": _joined(f"{w.get('n_prompts') or '?'} x {w.get('n_seeds') or '?'}" for w in work),
        "versions": _versions(envs),
        "harness": _joined(e.get("git_sha") for e in envs) or "-",
        "results": f"{len(records)} cells" + (f", measured {created[0]} .. {created[-1]}" if created else ""),
    }
    cap = gpu_cap(records)
    if cap:
        info["GPU memory cap"] = cap
    if is_synthetic(records):
        info["warning"] = SYNTHETIC_WARNING
    return info


def markdown(info: dict[str, str]) -> list[str]:
    """A `summary` as markdown list items, the warning in bold."""
    return [f"- **{text}**" if label == "warning" else f"- {label}: {text}" for label, text in info.items()]


def section(model: str, device: str, records: list[dict]) -> list[str]:
    """The head of one model x device section of a markdown report: its heading and its provenance."""
    return [f"## {model} on {device}", "", *markdown(summary(records))]


def one_line(records: list[dict]) -> str:
    """The provenance squeezed into one line (figure footers and image grid headers)."""
    info = summary(records)
    return (f"{info['device']} | {info['weights']} | {info['resolution']}, {info['steps']} steps | "
            f"{info['versions']} | harness {info['harness']}")
