"""README's generated tables stay in step with the code they describe."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def test_the_record_table_is_the_record_schema():
    from harness.record import schema_markdown

    assert _block("record-schema") == schema_markdown()


def test_the_options_table_is_the_option_schemas():
    from harness.listing import options_markdown

    assert _block("options") == options_markdown()


def test_every_status_exit_code_is_documented():
    from harness.cli import REJECTED, STATUS_EXIT

    section = README[README.index("| exit code | meaning |"):]
    assert f"| {REJECTED} | rejected input" in section
    codes = " / ".join(str(STATUS_EXIT[s]) for s in ("unsupported", "error", "oom", "timeout", "crashed"))
    assert f"| {codes} | a single cell ended" in section
