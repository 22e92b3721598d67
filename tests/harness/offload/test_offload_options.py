"""`harness.offload.options`: one schema per mode, the single source of defaults; `check_options` errors."""
import dataclasses
import inspect

import pytest

from harness.offload import MODES
from harness.offload.balanced.manager import BalancedOffload
from harness.offload.options import SCHEMAS, BalancedOptions, check_options, defaults


def test_options_are_checked():
    assert check_options("balanced", {"high_watermark": 0.8}) == {**defaults("balanced"), "high_watermark": 0.8}
    with pytest.raises(ValueError, match="no option 'high_watermrk'. Did you mean: high_watermark\\? Options: high_watermark, low_watermark"):
        check_options("balanced", {"high_watermrk": 0.8})


def test_defaults_are_the_schemas():
    assert defaults("balanced") == {"high_watermark": 0.7, "low_watermark": 0.2, "eviction": "as_needed",
                                    "pin_memory": True, "usable_gib": None, "max_fill": 0.95, "release_cache": True}
    assert defaults("group") == {"offload_type": "block_level", "num_blocks_per_group": 1, "use_stream": False}
    assert defaults("none") == defaults("model") == defaults("sequential") == {}
    assert check_options("group", None) == defaults("group")
    # the offloader's own defaults are the schema's
    params = inspect.signature(BalancedOffload).parameters
    for f in dataclasses.fields(BalancedOptions):
        if f.name in params:
            assert params[f.name].default == f.default, f.name


def test_config_lists_every_option_with_its_default(compose):
    from harness.validate import validate

    for mode in SCHEMAS:
        cfg = compose([f"offload={mode}"])
        assert dict(cfg.offload.options) == defaults(mode), mode
    assert validate(compose(["offload=balanced"])).offload["name"] == "balanced"


def test_every_field_documents_its_meaning():
    for mode, schema in SCHEMAS.items():
        for f in dataclasses.fields(schema):
            assert f.metadata.get("help"), f"{mode}.{f.name}"


def test_every_schema_is_a_structured_config():
    from omegaconf import OmegaConf

    for mode, schema in SCHEMAS.items():
        assert OmegaConf.to_container(OmegaConf.structured(schema)) == defaults(mode), mode


@pytest.mark.parametrize("mode, options, message", [
    ("balanced", {"hgh": 1}, r"^offload 'balanced' has no option 'hgh'. Options: high_watermark, low_watermark, "
                             r"eviction, pin_memory, usable_gib, max_fill, release_cache$"),
    ("model", {"x": 1}, r"^offload 'model' has no option 'x'. Options: none$"),
    ("balanced", {"high_watermark": 1.5}, r"^offload 'balanced' option high_watermark=1.5 is not valid: "
                                          r"expected float in \[0.0, 1.0\]$"),
    ("balanced", {"max_fill": -0.1}, r"max_fill=-0.1 is not valid: expected float in \[0.0, 1.0\] or null$"),
    ("balanced", {"high_watermark": "high"}, r"high_watermark='high' is not valid: expected float in"),
    ("balanced", {"pin_memory": "yes"}, r"^offload 'balanced' option pin_memory='yes' is not valid: expected bool$"),
    ("balanced", {"high_watermark": None}, r"high_watermark=None is not valid: expected float in \[0.0, 1.0\]$"),
    ("group", {"offload_type": "block"}, r"^offload 'group' option offload_type='block' is not valid: "
                                         r"expected block_level \| leaf_level$"),
    ("group", {"num_blocks_per_group": 0}, r"num_blocks_per_group=0 is not valid: expected int >= 1$"),
    ("group", {"num_blocks_per_group": 1.5}, r"num_blocks_per_group=1.5 is not valid: expected int >= 1$"),
    ("group", {"use_stream": 1}, r"use_stream=1 is not valid: expected bool$"),
    ("balanced", {"low_watermark": 0.8}, r"^balanced offload needs 0 < low_watermark <= high_watermark <= 1, "
                                         r"got low=0.8, high=0.7$"),
    ("balanced", {"low_watermark": 0.0}, r"0 < low_watermark"),
    ("balanced", {"max_fill": 0.0}, r"^balanced offload needs 0 < max_fill <= 1 \(or max_fill null\), got 0.0$"),
    ("balanced", {"usable_gib": 0}, r"^balanced offload needs usable_gib > 0 \(or usable_gib null\), got 0.0$"),
    ("bogus", {}, r"^Unknown offload mode 'bogus'. Available: none, model, sequential, group, balanced$"),
], ids=["unknown-key", "no-options", "out-of-range", "optional-out-of-range", "str-for-float", "str-for-bool",
        "null-not-optional", "bad-choice", "below-min", "float-for-int", "int-for-bool", "low-above-high",
        "zero-low", "zero-max-fill", "zero-usable", "unknown-mode"])
def test_a_bad_option_is_one_line_naming_what_is_valid(mode, options, message):
    with pytest.raises(ValueError, match=message) as err:
        check_options(mode, options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode, options, resolved", [
    ("balanced", {"high_watermark": 1}, {"high_watermark": 1.0}),
    ("balanced", {"usable_gib": None, "max_fill": None}, {"usable_gib": None, "max_fill": None}),
    ("balanced", {"usable_gib": 24}, {"usable_gib": 24.0}),
    ("group", {"num_blocks_per_group": 2.0, "offload_type": "leaf_level"},
     {"num_blocks_per_group": 2, "offload_type": "leaf_level"}),
], ids=["int-for-float", "nulls", "int-gib", "integral-float-for-int"])
def test_good_options_are_resolved(mode, options, resolved):
    out = check_options(mode, options)
    assert out == {**defaults(mode), **resolved}
    assert all(type(out[k]) is type(v) for k, v in resolved.items())


def test_every_mode_has_a_schema():
    assert set(SCHEMAS) == set(MODES)
