"""What a set of results was measured on, for every report: device, versions, weights, resolution, steps.

`groups(records)` splits records the way every report does (one section per model x device);
`describe(records)` is the provenance of one such group as ordered ``label -> text`` pairs.
"""
from __future__ import annotations

from collections import defaultdict

from reports.leaderboard import SYNTHETIC_WARNING

REFERENCE = {"engine": "bf16", "dtype": "bf16", "offload": "none", "compile": "none"}


def newest(records: list[dict], key) -> dict:
    """``key(record) -> the newest record with that key`` (by ``created``): a re-run replaces its cell."""
    out: dict = {}
    for r in sorted(records, key=lambda r: str(r.get("created") or "")):
        out[key(r)] = r
    return out


def device_of(record: dict) -> str:
    return (record.get("env") or {}).get("device_name") or "unknown"


def groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """``(model, device) -> records``, sorted by model then device."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        out[(r.get("model") or "unknown", device_of(r))].append(r)
    return dict(sorted(out.items()))


def is_reference(record: dict) -> bool:
    return all(record.get(k) == v for k, v in REFERENCE.items())


def is_synthetic(records: list[dict]) -> bool:
    return any((r.get("quality") or {}).get("synthetic_weights") for r in records)


def label(record: dict) -> str:
    """``engine:dtype`` plus offload / compile / mode when they are not the defaults."""
    text = f"{record.get('engine')}:{record.get('dtype')}"
    if record.get("mode") == "pre":
        text += " pre"
    if record.get("offload") not in (None, "none"):
        text += f" offload={record['offload']}"
    if record.get("compile") not in (None, "none"):
        text += f" compile={record['compile']}"
    return text


def describe(records: list[dict]) -> dict[str, str]:
    """Provenance of one group of records, as ``label -> text`` in display order."""
    envs = [r.get("env") or {} for r in records]
    work = [r.get("workload") or {} for r in records]
    versions: dict[str, set] = defaultdict(set)
    for env in envs:
        for pkg, version in (env.get("versions") or {}).items():
            if version:
                versions[pkg].add(str(version))
    kinds = {(r.get("metrics") or {}).get("memory_kind") for r in records} - {None}
    created = sorted(str(r["created"]) for r in records if r.get("created"))
    info = {
        "device": ", ".join(sorted({device_of(r) for r in records})),
        "memory": "GPU (torch.cuda allocated / reserved)" if kinds == {"cuda"} else
                  "host RSS (no GPU)" if kinds == {"host_rss"} else ", ".join(sorted(kinds)) or "-",
        "driver / CUDA": ", ".join(sorted({f"{e.get('driver') or '-'} / {e.get('cuda') or '-'}" for e in envs})),
        "weights": "synthetic (random) weights" if is_synthetic(records) else "real checkpoint",
        "resolution": ", ".join(sorted({f"{w.get('width')}x{w.get('height')}" for w in work})) + " px",
        "steps": ", ".join(str(s) for s in sorted({w.get("steps") for w in work if w.get("steps") is not None})),
        "prompts x seeds": ", ".join(sorted({f"{w.get('n_prompts', '?')} x {w.get('n_seeds', '?')}" for w in work})),
        "versions": ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items())) or "-",
        "harness": ", ".join(sorted({str(e.get("git_sha")) for e in envs if e.get("git_sha")})) or "-",
        "results": f"{len(records)} cells" + (f", measured {created[0]} .. {created[-1]}" if created else ""),
    }
    if is_synthetic(records):
        info["warning"] = SYNTHETIC_WARNING
    return info


def one_line(records: list[dict]) -> str:
    """The provenance squeezed into one line (figure footers)."""
    info = describe(records)
    return (f"{info['device']} | {info['weights']} | {info['resolution']}, {info['steps']} steps | "
            f"{info['versions']} | harness {info['harness']}")
