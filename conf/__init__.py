"""The harness's Hydra configs, shipped as package data (`harness.paths.conf_dir` finds them)."""
