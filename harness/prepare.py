"""``python -m harness prepare [--check] [--install WHAT=PATH ...] [OVERRIDES ...]``: put on disk what a run reads.

A run never downloads (`harness.checkpoint`, `harness.quality`): it reads a real checkpoint given by repo id and
the CLIP model from the Hugging Face cache, LPIPS's AlexNet backbone from the torch hub cache and its v0.1
linear layers from the lpips package. For the config the overrides compose (as a single run composes it),
this command

- online (no ``--install``): fetches what is missing into exactly those places: repo ids into the Hugging Face
  cache through ``huggingface_hub`` (`harness.fetch.repo`; honours ``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_TOKEN``; only
  the files a diffusers / transformers load reads), AlexNet from torchvision's URL through ``torch.hub``
  (hash-checked, honours ``TORCH_HOME``), each with a progress bar;
- offline (``--install WHAT=PATH``): copies the files given into the same places (``checkpoint`` and ``clip``:
  a folder, installed in the Hugging Face cache under the config's repo id; ``alexnet``, ``lpips-linear``: a
  file) and fetches nothing;
- with ``--check``: says what the config would find or miss, and changes nothing.

Exit status: 0 everything the config reads is on disk; 1 something is still missing (or a download failed),
one line each; 2 bad input, one line.
"""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import fetch
from harness.errors import ConfigError

#: What ``--install`` takes, and what each is.
INSTALLABLE = {"checkpoint": "a diffusers pipeline folder, for model.path's repo id",
               "clip": "a CLIP model folder, for metrics.clip_model's repo id",
               "alexnet": "torchvision's AlexNet weights file (alexnet-owt-7be5be79.pth)",
               "lpips-linear": "LPIPS v0.1 linear layers file (alex.pth)"}
OPTIONS = ("--check", "--install", "--help")
OK, MISSING, REJECTED = 0, 1, 2


@dataclass
class Need:
    """One thing a run of the config reads from disk."""

    #: ``checkpoint``, ``clip``, ``alexnet`` or ``lpips-linear`` (the ``--install`` names).
    name: str
    #: What it is, for the report line.
    what: str
    #: Where the run finds it, None while it is missing.
    found: Path | None
    #: Where it goes: a file path, or None for the Hugging Face cache (``repo`` set).
    target: Path | None = None
    #: The Hugging Face repo id it is fetched from / installed as.
    repo: str | None = None
    #: Why it cannot be fetched here (a local folder the user names, a package to install); "" when it can.
    manual: str = ""
    #: The config names this file's place itself (a metrics.*_path), rather than a default location.
    configured: bool = False


def usage() -> str:
    lines = ["usage: python -m harness prepare [--check] [--install WHAT=PATH ...] [OVERRIDES ...]", "",
             "Puts on disk what a run of the config (the overrides, as for a run) reads: a real checkpoint",
             "(model.path=REPO/ID) and the CLIP model in the Hugging Face cache, LPIPS's AlexNet in the torch",
             "hub cache. Online it downloads what is missing; --install copies files you give instead.", "",
             "  --check             say what the config would find or miss; change nothing",
             "  --install WHAT=PATH install PATH (repeatable; nothing is downloaded). WHAT:"]
    lines += [f"                        {name:13s} {text}" for name, text in INSTALLABLE.items()]
    lines += ["", "exit codes: 0 everything is on disk, 1 something is still missing, 2 rejected input"]
    return "\n".join(lines)


def main(args: list[str]) -> int:
    """The subcommand; ``args`` follow ``prepare``."""
    try:
        check, installs, overrides = parse(args)
        if check is None:
            print(usage())
            return 0
        cfg = compose_config(overrides)
        needs = needs_of(cfg)
        sources = {name: _source(name, path, needs) for name, path in installs.items()}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REJECTED
    if check:
        return report(needs)
    failed = False
    for need, path in ((n, sources[n.name]) for n in needs if n.name in sources):
        install(need, path)
    if not installs:
        todo = [n for n in needs if n.found is None and not n.manual]
        for i, need in enumerate(todo, 1):
            print(f"fetching {i} of {len(todo)}: {need.what} -> {_where(need)}", file=sys.stderr)
            try:
                need.found = download(need)
            except Exception as exc:  # noqa: BLE001 - one line per failed download, the others go on
                failed = True
                print(f"error: could not fetch {need.what}: {fetch.why(exc)}", file=sys.stderr)
    return report(needs_of(cfg)) or (MISSING if failed else OK)


def parse(args: list[str]) -> tuple[bool | None, dict[str, Path], list[str]]:
    """``(check, {what: path}, overrides)``; check is None for ``--help``. `ConfigError` on bad input."""
    check, installs, overrides = False, {}, []
    items = iter(args)
    for arg in items:
        if arg in ("-h", "--help", "help"):
            return None, {}, []
        if arg == "--check":
            check = True
        elif arg == "--install" or arg.startswith("--install="):
            value = arg.partition("=")[2] if "=" in arg and arg.startswith("--install=") else next(items, "")
            what, sep, path = value.partition("=")
            if what not in INSTALLABLE or not sep or not path:
                close = difflib.get_close_matches(what, list(INSTALLABLE), n=1, cutoff=0.5)
                hint = f" Did you mean: {close[0]}?" if close and close[0] != what else ""
                raise ConfigError(f"--install takes WHAT=PATH with WHAT one of {', '.join(INSTALLABLE)}, not "
                                  f"{value!r}.{hint}")
            installs[what] = Path(path).expanduser()
        elif arg.startswith("-"):
            close = difflib.get_close_matches(arg.split("=")[0], list(OPTIONS), n=1, cutoff=0.5)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise ConfigError(f"unknown option '{arg}' of prepare.{hint} Options: {', '.join(OPTIONS)}; the rest are "
                              "overrides (KEY=VALUE)")
        elif "=" in arg:
            overrides.append(arg)
        else:
            raise ConfigError(f"prepare takes overrides (KEY=VALUE) and options, not '{arg}'; see python -m harness "
                              "prepare --help")
    if check and installs:
        raise ConfigError("--check changes nothing: give it without --install")
    return check, installs, overrides


def compose_config(overrides: list[str]) -> dict:
    """The parts of the composed config that say what a run reads: ``model`` and ``metrics``. Only composed
    (a checkpoint that is not on disk yet is what this command is for), so bad overrides still fail here."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.compose import check_group_overrides, explain
    from harness.paths import conf_dir
    from harness.schema import register

    register()
    check_group_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "metrics")}
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - every composition failure is bad input
        raise ConfigError(explain(exc)) from None


def is_repo_id(text: str) -> bool:
    """A Hugging Face repo id (``owner/name``) rather than a local path, as `harness.checkpoint.resolve` tells."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).expanduser().exists()


def needs_of(cfg: dict) -> list[Need]:
    """What a run of ``cfg`` reads, each with where it is found (None while missing)."""
    from harness import checkpoint, quality

    out = []
    path = cfg["model"].get("path")
    if path:
        if is_repo_id(path):
            out.append(Need("checkpoint", f"checkpoint {path}", _cached(path), repo=path))
        else:
            folder = Path(path).expanduser()
            found = folder if folder.is_dir() else None
            out.append(Need("checkpoint", f"checkpoint {path}", found, target=folder,
                            manual="" if found else f"no folder at {folder}: point model.path at your copy, or "
                                                    "at a repo id to fetch"))
        if out[-1].found is not None:
            try:
                checkpoint.check(out[-1].found)
            except checkpoint.CheckpointError as exc:
                out[-1].found, out[-1].manual = None, f"on disk but unusable: {exc}"
    metrics = cfg["metrics"]
    if metrics.get("lpips", True):
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints" / quality.ALEXNET_FILE
        alex = Path(metrics.get("lpips_alexnet_path") or hub)
        out.append(Need("alexnet", "LPIPS backbone: torchvision's AlexNet weights", _file(alex), target=alex))
        out.append(_linear_layers(metrics.get("lpips_linear_path")))
    if metrics.get("clip", True):
        source = metrics.get("clip_model") or ""
        if is_repo_id(source):
            out.append(Need("clip", f"CLIP model {source}", _cached(source), repo=source))
        else:
            folder = Path(source).expanduser()
            found = folder if (folder / "config.json").is_file() else None
            out.append(Need("clip", f"CLIP model {source}", found, target=folder,
                            manual="" if found else "a local folder without config.json: point metrics.clip_model "
                                                    "at your copy, or at a repo id to fetch"))
    return out


def _linear_layers(configured: str | None) -> Need:
    """LPIPS's v0.1 linear layers: ``metrics.lpips_linear_path``, else the copy the lpips package ships. Never
    downloaded: they come with the package (or ``--install lpips-linear=FILE`` to the configured path)."""
    try:
        import lpips

        target = Path(configured or Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")
        manual = (f"not at {target}: they ship with the lpips package (reinstall it), or set "
                  "metrics.lpips_linear_path to your copy")
    except ImportError:
        target = Path(configured) if configured else None
        manual = "the lpips package is not installed: pip install -e '.[metrics]' (its linear layers ship with it)"
    found = _file(target)
    return Need("lpips-linear", "LPIPS v0.1 linear layers", found, target=target, manual="" if found else manual,
                configured=bool(configured))


def _file(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


def _cached(repo: str) -> Path | None:
    """The repo's snapshot in the Hugging Face cache, looked up offline as the run looks it up."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or an incomplete snapshot)
        return None


def _where(need: Need) -> str:
    return f"the Hugging Face cache ({fetch.hf_cache()})" if need.repo else str(need.target)


def report(needs: list[Need]) -> int:
    """One line per need (found where, or missing and what to do); `OK` when nothing is missing."""
    if not needs:
        print("nothing to prepare: synthetic weights are built by the run, and no metric reads pretrained weights")
        return OK
    width = max(len(n.name) for n in needs)
    for n in needs:
        if n.found is not None:
            print(f"found    {n.name:{width}s}  {n.what}: {n.found}")
        else:
            how = n.manual or (f"not in {_where(n)}; python -m harness prepare fetches it, or --install "
                               f"{n.name}=PATH installs your copy")
            print(f"missing  {n.name:{width}s}  {n.what}: {how}")
    missing = [n for n in needs if n.found is None]
    print(f"{len(needs) - len(missing)} found, {len(missing)} missing")
    return MISSING if missing else OK


def _source(name: str, path: Path, needs: list[Need]) -> Path:
    """Check an ``--install`` source against what the config reads; `ConfigError` when it cannot go there."""
    need = next((n for n in needs if n.name == name), None)
    if need is None:
        raise ConfigError(f"--install {name}: this config reads no {name} (see python -m harness prepare --check)")
    if need.repo is None and need.target is None:
        raise ConfigError(f"--install {name}: {need.manual}")
    if need.repo is None and name in ("checkpoint", "clip"):
        raise ConfigError(f"--install {name}: the config names a local folder ({need.target}); point it at {path} "
                          "instead of installing")
    if name in ("checkpoint", "clip"):
        if not path.is_dir():
            raise ConfigError(f"--install {name}={path}: not a folder")
        if name == "checkpoint":
            from harness import checkpoint

            try:
                checkpoint.check(path)
            except checkpoint.CheckpointError as exc:
                raise ConfigError(f"--install checkpoint: {exc}") from None
        elif not (path / "config.json").is_file():
            raise ConfigError(f"--install clip={path}: not a CLIP model folder (no config.json)")
        return path
    if not path.is_file():
        raise ConfigError(f"--install {name}={path}: not a file")
    if name == "lpips-linear":
        if not need.configured:
            raise ConfigError("--install lpips-linear: the LPIPS linear layers ship with the lpips package, and "
                              "prepare never writes into an installed package; set metrics.lpips_linear_path=FILE "
                              "to use your copy (or to name where --install puts it)")
        from harness.quality import lpips_linear_problem

        problem = lpips_linear_problem(path)
        if problem:
            raise ConfigError(f"--install lpips-linear: {problem}")
    if name == "alexnet" and not fetch.sha256(path).startswith(fetch.ALEXNET_SHA256_PREFIX):
        raise ConfigError(f"--install alexnet={path}: not torchvision's AlexNet weights (its SHA-256 does not start "
                          f"with {fetch.ALEXNET_SHA256_PREFIX})")
    return path


def download(need: Need) -> Path:
    """Download ``need`` into the place the run reads it from (`harness.fetch`); return where it now is."""
    if need.repo:
        folder = fetch.repo(need.repo, pipeline=need.name == "checkpoint")
        if need.name == "checkpoint":
            from harness import checkpoint

            checkpoint.check(folder)
        return folder
    if need.name == "alexnet":
        return fetch.alexnet(need.target)
    raise ValueError(f"{need.what} is not downloadable")


def install(need: Need, source: Path) -> Path:
    """Copy ``source`` where the run reads ``need``: a folder into the Hugging Face cache as ``need.repo``,
    a file to its target."""
    print(f"installing {source} as {need.what} -> {_where(need)}", file=sys.stderr)
    if need.repo:
        return fetch.install_snapshot(need.repo, source)
    return fetch.install_file(source, need.target)


