"""``python -m harness list``: what can be chosen, read from the registry, the schemas and conf/."""
from __future__ import annotations

from engines.options import rows
from engines.registry import get_engine_class, visible
from harness.compose import group_choices


def _options(schema: type, indent: str) -> list[str]:
    return [f"{indent}{name}={default}  ({valid}): {help_}" for name, default, valid, help_ in rows(schema)]


def print_listing() -> None:
    print("engines (engine=NAME dtype=TYPE engine.options.NAME=VALUE):")
    for name in visible():
        try:
            cls = get_engine_class(name)
        except Exception as exc:  # noqa: BLE001 - a broken engine module must not hide the others
            print(f"  {name:10s} unavailable: {type(exc).__name__}: {exc}")
            continue
        missing = cls.missing_packages()
        note = f"  [missing: {', '.join(missing)}]" if missing else ""
        print(f"  {name:10s} dtypes: {', '.join(cls.dtypes)} (default {cls.default_dtype}); "
              f"modes: {', '.join(cls.modes)}{note}")
        for line in _options(cls.options, "      "):
            print(line)
    from harness.offload import options as offload_options

    print("offload (offload=NAME offload.options.NAME=VALUE):")
    for name, schema in offload_options.SCHEMAS.items():
        print(f"  {name}")
        for line in _options(schema, "      "):
            print(line)
    from harness.lora import options as lora_options

    print("lora (lora=NAME lora.options.NAME=VALUE):")
    for name, schema in lora_options.SCHEMAS.items():
        print(f"  {name}")
        for line in _options(schema, "      "):
            print(line)
    import dataclasses

    from harness.schema import COMPILE_SCHEMAS

    print("compile (compile=NAME compile.KEY=VALUE):")
    for name, schema in COMPILE_SCHEMAS.items():
        keys = [f.name for f in dataclasses.fields(schema) if f.name != "name"]
        print(f"  {name}" + (f"  keys: {', '.join(keys)}" if keys else ""))
    for group in ("model", "workload", "experiment"):
        print(f"{group}: {', '.join(group_choices(group))}")


def options_markdown() -> str:
    """README's options table: every engine's, offload mode's and LoRA choice's options, from their schemas."""
    from harness.lora import options as lora_options
    from harness.offload import options as offload_options

    lines = ["| set with | option | default | valid values | meaning |", "|---|---|---|---|---|"]
    groups = [(f"engine={name}", "engine.options", get_engine_class(name).options) for name in visible()]
    groups += [(f"offload={name}", "offload.options", schema) for name, schema in offload_options.SCHEMAS.items()]
    groups += [(f"lora={name}", "lora.options", schema) for name, schema in lora_options.SCHEMAS.items()]
    for choice, prefix, schema in groups:
        for name, default, valid, help_ in rows(schema):
            lines.append(f"| `{choice}` | `{prefix}.{name}` | `{default}` | {valid.replace('|', '/')} | {help_} |")
    return "\n".join(lines)
