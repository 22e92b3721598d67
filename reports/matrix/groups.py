"""Identical failures, grouped: cells whose status, exception type and normalized message
(`harness.status.normalize_message`) agree share a group, listed once with every cell that hits it.

Failures are numbered ``E1``, ``E2``, ... by number of cells (most first), declared-unsupported reasons
``U1``, ``U2``, ... after them.
"""
from __future__ import annotations

from collections import defaultdict

import pandas as pd


def group_key(row: dict) -> tuple | None:
    """What makes two matrix rows the same failure; None for an ok cell."""
    if row["status"] == "ok":
        return None
    return (row["status"], row["error_type"] or "", row["normalized"] or "")


def group_ids(rows: list[dict]) -> dict[tuple, str]:
    """`group_key` -> ``E1``, ``E2``, ... (failures by number of cells, then unsupported reasons ``U1``...)."""
    counts: dict[tuple, int] = defaultdict(int)
    for row in rows:
        key = group_key(row)
        if key:
            counts[key] += 1
    ordered = sorted(counts, key=lambda k: (k[0] == "unsupported", -counts[k], k))
    ids, n_fail, n_unsup = {}, 0, 0
    for key in ordered:
        if key[0] == "unsupported":
            n_unsup += 1
            ids[key] = f"U{n_unsup}"
        else:
            n_fail += 1
            ids[key] = f"E{n_fail}"
    return ids


def label(row: dict) -> str:
    """``engine:dtype`` (+ ``pre``) ``offload=... compile=...`` (+ ``lora=...``): one combination, as the
    matrix names it."""
    mode = " pre" if row.get("mode") == "pre" else ""
    lora = f" lora={row['lora']}" if row.get("lora") not in (None, "none") else ""
    return f"{row['engine']}:{row['dtype']}{mode} offload={row['offload']} compile={row['compile']}{lora}"


def from_frame(df: pd.DataFrame) -> list[dict]:
    """The groups of a matrix frame: ``{id, status, type, message (an example first line), normalized,
    count, cells: [labels], stages: [each cell's stage or None], models: ["model on device"], known:
    [issue keys]}``; failures first (most cells first), then unsupported."""
    out: dict[str, dict] = {}
    for row in df.to_dict("records"):
        gid = row["error_group"]
        if not gid:
            continue
        group = out.setdefault(gid, {"id": gid, "status": row["status"], "type": row["error_type"],
                                     "message": row["message"], "normalized": row["normalized"], "count": 0,
                                     "cells": [], "stages": [], "models": set(), "known": set()})
        group["count"] += 1
        group["cells"].append(label(row))
        group["stages"].append(row["stage"])
        group["models"].add(f"{row['model']} on {row['device']}")
        group["known"].update(k for k in (row["known_issues"] or "").split(";") if k)
    found = sorted(out.values(), key=lambda g: (g["id"][0] == "U", int(g["id"][1:])))
    for g in found:
        g["models"], g["known"] = sorted(g["models"]), sorted(g["known"])
    return found
