"""`CellSpec`: everything one cell needs, resolved and checked (built by `harness.validate.validate`).

Plain data, so it crosses the fork to the cell process unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CellSpec:
    config: dict[str, Any]
    engine: str
    dtype: str
    mode: str
    components: list[str]
    engine_options: dict[str, Any]
    model: dict[str, Any]
    offload: dict[str, Any]
    compile: dict[str, Any]
    workload: dict[str, Any]
    metrics: dict[str, Any]
    run: dict[str, Any]
    #: Real checkpoint folder, or None for the synthetic one (built in the cell process).
    checkpoint_path: str | None = None
    #: The LoRA (`harness.lora.check.resolve`): ``{"name", "options"[, "files"]}``; name ``none`` = no LoRA.
    lora: dict[str, Any] = field(default_factory=lambda: {"name": "none", "options": {}})

    @property
    def has_lora(self) -> bool:
        return self.lora.get("name", "none") != "none"

    @property
    def is_reference(self) -> bool:
        """The BF16 cell every other cell of its workload (and LoRA) is compared with: its images are the
        reference (with a LoRA: BF16 and BF16 + LoRA, the LoRA kept beside the layers, not fused)."""
        return (self.engine == "bf16" and self.dtype == "bf16" and self.offload["name"] == "none"
                and self.compile["name"] == "none" and not (self.lora.get("options") or {}).get("fuse"))

    def label(self) -> str:
        """One line naming the cell, for the console."""
        from harness.lora import label

        text = (f"model={self.model['name']} engine={self.engine} dtype={self.dtype} mode={self.mode} "
                f"offload={self.offload['name']} compile={self.compile['name']}")
        return text + (f" lora={label(self.lora)}" if self.has_lora else "")
