import pytest
from harness.validate import validate

CONF_GROUPS = ["model", "engine", "offload", "compile", "workload"]


def _choices(group):
    from tests.conftest import CONF

    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", CONF_GROUPS)
def test_every_group_option_composes(compose, group):
    for choice in _choices(group):
        cfg = compose([f"{group}={choice}"])
        assert cfg[group].name == choice if group != "model" else cfg.model.name == choice


def test_default_config_is_a_tiny_flux_torchao_cell(compose):
    cfg = compose()
    assert (cfg.model.name, cfg.engine.name, cfg.offload.name, cfg.compile.name) == ("flux-tiny", "torchao", "none", "none")
    cell = validate(cfg)
    assert cell.dtype == "int8" and cell.components == ["transformer"]


def test_typo_in_key_fails_at_composition(compose):
    with pytest.raises(Exception, match="stepz"):
        compose(["workload.stepz=3"])


def test_wrong_type_fails_at_composition(compose):
    with pytest.raises(Exception, match="steps"):
        compose(["workload.steps=many"])


@pytest.mark.parametrize("experiment", _choices("experiment"))
def test_every_experiment_composes_and_plans(experiment):
    """Every experiment file composes, and every cell it sweeps validates (or is a dtype skip)."""
    from harness.compose import plan

    out = plan([f"+experiment={experiment}"])
    assert out.specs, experiment
    workload = {"smoke": "tiny", "matrix-cpu": "tiny"}.get(experiment)
    if workload:
        assert {s.workload["name"] for s in out.specs} == {workload}


def test_engine_yaml_options_match_engine_declarations(compose):
    from engines.registry import available, get_engine_class

    for name in _choices("engine"):
        cfg = compose([f"engine={name}"])
        if name in available():
            assert dict(cfg.engine.options) == get_engine_class(name).option_defaults(), name


def test_unknown_option_typo_fails_at_composition(compose):
    with pytest.raises(Exception, match="grup_size"):
        compose(["engine.options.grup_size=64"])
