"""``python -m harness prepare``: downloads from a loopback stand-in for the Hugging Face Hub and the AlexNet
URL (never the real network), offline installs, --check, and bad input as one line with exit 2."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import save_file

from harness import fetch, prepare
from harness.cli import main

#: Runs the CLI with the AlexNet source pointed at the test's server (argv: url, sha256 prefix, CLI args); CLI
#: invocations separated by ``::`` run one after the other, each followed by a line ``== exit N``; the process
#: exits with the last one's status.
BOOT = """
import sys
import harness.fetch as f
from harness.cli import main

f.ALEXNET_URL, f.ALEXNET_SHA256_PREFIX = sys.argv[1:3]
code = 0
for args in " ".join(sys.argv[3:]).split(" :: "):
    code = main(args.split())
    print(f"== exit {code}", flush=True)
sys.exit(code)
"""
#: What a run looks up, in a fresh process: the checkpoint, the CLIP model, the AlexNet file (as JSON).
LOOKUP = ("import json, sys, torch; from pathlib import Path; from harness import checkpoint, quality; "
          "folder = checkpoint.resolve(sys.argv[1]); checkpoint.check(folder); "
          "alex = Path(torch.hub.get_dir()) / 'checkpoints' / quality.ALEXNET_FILE; "
          "print(json.dumps({'checkpoint': str(folder), 'clip': str(quality._local_model_folder(sys.argv[2])), "
          "'alexnet': alex.read_bytes().hex() if alex.is_file() else None}))")
REPOS = ["model.path=org/flux", "metrics.clip_model=org/clip"]


def _safetensors(tmp: Path) -> bytes:
    path = tmp / "w.safetensors"
    save_file({"weight": torch.zeros(4, 4)}, str(path))
    return path.read_bytes()


def pipeline_files(tmp: Path) -> dict[str, bytes]:
    """A diffusers pipeline repo as the Hub holds one: the folders a load reads, and what it does not."""
    weights = _safetensors(tmp)
    index = {"_class_name": "FluxPipeline", "_diffusers_version": "0.30.0",
             "transformer": ["diffusers", "FluxTransformer2DModel"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    return {"model_index.json": json.dumps(index).encode(), "transformer/config.json": b'{"num_layers": 1}',
            "transformer/diffusion_pytorch_model.safetensors": weights,
            "scheduler/scheduler_config.json": b"{}",
            # not read by from_pretrained: a root single-file checkpoint, a variant, another framework, docs
            "flux1-dev.safetensors": weights, "transformer/diffusion_pytorch_model.fp16.safetensors": weights,
            "text_encoder/model.onnx": b"onnx", "README.md": b"# flux"}


def clip_files(tmp: Path) -> dict[str, bytes]:
    return {"config.json": b'{"model_type": "clip"}', "model.safetensors": _safetensors(tmp),
            "tokenizer.json": b"{}", "pytorch_model.bin": b"torch pickle", "flax_model.msgpack": b"flax"}


SKIPPED = ("flux1-dev.safetensors", ".fp16.", "model.onnx", "README.md", "pytorch_model.bin", "flax_model")


class Hub:
    """The few Hub endpoints a download calls (repo info at a revision, HEAD/GET of a file at a revision) and
    plain files, on 127.0.0.1; ``requests`` logs every (method, path)."""

    def __init__(self, repos: dict[str, dict[str, bytes]], files: dict[str, bytes]):
        self.repos = {repo: (hashlib.sha1(repo.encode()).hexdigest(), content) for repo, content in repos.items()}
        self.files, self.requests = files, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        status, headers, data = self.route(unquote(urlsplit(handler.path).path))
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def route(self, path: str) -> tuple[int, dict, bytes]:
        if path in self.files:
            return 200, {"Content-Type": "application/octet-stream"}, self.files[path]
        for repo, (sha, content) in self.repos.items():
            if path == f"/api/models/{repo}/revision/main":
                info = {"id": repo, "sha": sha, "siblings": [{"rfilename": name} for name in content]}
                return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                revision, _, name = path[len(prefix):].partition("/")
                if revision in ("main", sha) and name in content:
                    data = content[name]
                    return 200, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, data
        return 404, {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, b'{"error": "not found"}'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path):
    alexnet = b"alexnet weights, as far as this test knows"
    served = Hub({"org/flux": pipeline_files(tmp_path), "org/clip": clip_files(tmp_path)},
                 {"/models/alexnet-owt-7be5be79.pth": alexnet})
    served.alexnet = alexnet
    yield served
    served.close()


def _env(tmp_path: Path, endpoint: str, offline: bool) -> dict:
    return {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "1" if offline else "0", "TORCH_HOME": str(tmp_path / "torch"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "HF_TOKEN": ""}


def _run(env: dict, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)  # four interpreter starts with torch and Hydra, ~20 s idle
def test_prepare_downloads_what_a_run_reads_into_the_caches_it_reads(tmp_path, hub):
    env = _env(tmp_path, hub.url, offline=False)
    sha = hashlib.sha256(hub.alexnet).hexdigest()[:8]
    url = f"{hub.url}/models/alexnet-owt-7be5be79.pth"

    proc = _run(env, BOOT, url, sha, "prepare", "--check", *REPOS, "::", "prepare", *REPOS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, fetched = proc.stdout.split("== exit 1\n")
    assert before.count("missing  ") == 3 and "found    lpips-linear" in before
    assert fetched.count("found    ") == 4 and "4 found, 0 missing" in fetched
    assert "100%" in proc.stderr  # the progress bars
    asked = [path for _, path in hub.requests]
    assert not any(skip in path for path in asked for skip in SKIPPED), asked

    lookup = _run(_env(tmp_path, "http://127.0.0.1:9", offline=True), LOOKUP, "org/flux", "org/clip")
    assert lookup.returncode == 0, lookup.stderr[-3000:]
    found = json.loads(lookup.stdout)
    folder, clip = Path(found["checkpoint"]), Path(found["clip"])
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (folder / "flux1-dev.safetensors").exists() and not (folder / "text_encoder").exists()
    assert (clip / "model.safetensors").is_file() and not (clip / "pytorch_model.bin").exists()
    assert bytes.fromhex(found["alexnet"]) == hub.alexnet


@pytest.mark.timeout(300)
def test_a_download_that_fails_is_one_line_and_exit_1(tmp_path, hub):
    env = _env(tmp_path, hub.url, offline=False)
    proc = _run(env, BOOT, f"{hub.url}/models/alexnet-owt-7be5be79.pth", "00000000", "prepare",
                "model.path=org/missing", "metrics.clip=false")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr
    assert any("checkpoint org/missing: no such repo, or it is private" in e for e in errors)
    assert any("AlexNet" in e and "hash" in e for e in errors)
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").exists()


@pytest.mark.timeout(300)
def test_offline_install_puts_the_given_files_where_the_run_reads_them(tmp_path, hub):
    source = tmp_path / "copies"
    for name, content in {**{f"flux/{k}": v for k, v in pipeline_files(tmp_path).items()},
                          **{f"clip/{k}": v for k, v in clip_files(tmp_path).items()},
                          "alexnet.pth": hub.alexnet}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(content)
    env = _env(tmp_path, "http://127.0.0.1:9", offline=True)
    sha = hashlib.sha256(hub.alexnet).hexdigest()[:8]
    proc = _run(env, BOOT, "http://127.0.0.1:9/nothing", sha, "prepare", *REPOS,
                f"--install=checkpoint={source / 'flux'}", "--install", f"clip={source / 'clip'}",
                "--install", f"alexnet={source / 'alexnet.pth'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 found, 0 missing" in proc.stdout and "copying" in proc.stderr
    lookup = _run(env, LOOKUP, "org/flux", "org/clip")
    assert lookup.returncode == 0, lookup.stderr[-3000:]
    found = json.loads(lookup.stdout)
    index = (Path(found["checkpoint"]) / "model_index.json").read_bytes()
    assert index == (source / "flux" / "model_index.json").read_bytes()
    assert (Path(found["clip"]) / "config.json").is_file() and bytes.fromhex(found["alexnet"]) == hub.alexnet
    assert hub.requests == []


def test_only_the_files_a_load_reads_are_selected():
    repo = ["model_index.json", "flux1-dev.safetensors", "ae.safetensors", "README.md", "transformer/config.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors",
            "unet/openvino_model.xml", "text_encoder/model.onnx", "text_encoder/pytorch_model.bin"]
    assert fetch.select(repo, pipeline=True) == [
        "model_index.json", "transformer/config.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model.safetensors", "text_encoder/pytorch_model.bin"]
    clip = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
            "tokenizer.json", "vocab.json"]
    assert fetch.select(clip, pipeline=False) == ["config.json", "model.safetensors", "tokenizer.json", "vocab.json"]


@pytest.mark.parametrize("args, message", [
    (["--chek"], "unknown option '--chek' of prepare. Did you mean: --check?"),
    (["--install", "alexnt=/x"], "Did you mean: alexnet?"),
    (["--install", "alexnet"], "--install takes WHAT=PATH"),
    (["fetch"], "prepare takes overrides (KEY=VALUE) and options, not 'fetch'"),
    (["--check", "--install", "alexnet=/x"], "--check changes nothing"),
    (["model=flux-dve"], "Unknown model 'flux-dve'"),
    (["--install", "checkpoint=/x"], "this config reads no checkpoint"),
    (["metrics.lpips=false", "--install", "alexnet=/x"], "this config reads no alexnet"),
    (["--install", "alexnet=/no/such/file"], "not a file"),
    (["model.path=/no/such/folder", "--install", "checkpoint=/x"], "the config names a local folder"),
], ids=["typo", "install-typo", "install-no-path", "stray-word", "check-and-install", "bad-override",
        "synthetic-checkpoint", "metric-off", "missing-file", "local-folder"])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(["prepare", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_installs_are_checked_before_anything_is_copied(tmp_path, capsys):
    not_alexnet = tmp_path / "alexnet.pth"
    not_alexnet.write_bytes(b"something else")
    not_a_pipeline = tmp_path / "flux"
    not_a_pipeline.mkdir()
    assert main(["prepare", "--install", f"alexnet={not_alexnet}"]) == 2
    assert "not torchvision's AlexNet weights" in capsys.readouterr().err
    assert main(["prepare", "model.path=org/flux", "--install", f"checkpoint={not_a_pipeline}"]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    assert main(["prepare", "metrics.clip_model=org/clip", "--install", f"clip={not_a_pipeline}"]) == 2
    assert "not a CLIP model folder" in capsys.readouterr().err


def test_help_lists_what_can_be_installed(capsys):
    assert main(["prepare", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in prepare.INSTALLABLE) and "--check" in out


def test_check_changes_nothing_and_asks_no_network(monkeypatch, capsys):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("--check must not download")

    for owner, name in ((huggingface_hub.HfApi, "repo_info"), (huggingface_hub, "hf_hub_download"),
                        (torch.hub, "download_url_to_file"), (prepare, "download"), (prepare, "install")):
        monkeypatch.setattr(owner, name, refuse)
    code = main(["prepare", "--check", "model.path=org/not-cached-here"])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "org/not-cached-here" in line)
    assert code == 1 and line.startswith("missing  checkpoint ") and "not in the Hugging Face cache" in line


def test_an_install_goes_where_the_config_says_and_what_is_left_missing_exits_1(tmp_path, capsys):
    layers, target, alexnet = tmp_path / "alex.pth", tmp_path / "weights" / "lpips-v0.1.pth", tmp_path / "none.pth"
    torch.save(_lpips_linear(), layers)
    args = ["prepare", "metrics.clip=false", f"metrics.lpips_linear_path={target}",
            f"metrics.lpips_alexnet_path={alexnet}"]
    assert main([*args, "--install", f"lpips-linear={layers}"]) == 1  # AlexNet is still missing
    out = capsys.readouterr().out
    assert target.read_bytes() == layers.read_bytes() and not list(target.parent.glob(".*partial"))
    assert f"found    lpips-linear  LPIPS v0.1 linear layers: {target}" in out
    assert f"missing  alexnet       LPIPS backbone: torchvision's AlexNet weights: not in {alexnet}" in out
    assert "1 found, 1 missing" in out and not alexnet.exists()  # an install fetches nothing


def _lpips_linear() -> dict:
    from harness.quality import LPIPS_LINEAR_CHANNELS

    return {f"lin{i}.model.1.weight": torch.zeros(1, c, 1, 1) for i, c in enumerate(LPIPS_LINEAR_CHANNELS)}


def test_lpips_linear_layers_are_checked_and_never_written_into_the_package(tmp_path, capsys):
    not_layers = tmp_path / "passwd"
    not_layers.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["prepare", "metrics.clip=false", "--install", f"lpips-linear={not_layers}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "never writes into an installed package" in err[0]
    target = tmp_path / "weights" / "alex.pth"
    assert main(["prepare", "metrics.clip=false", f"metrics.lpips_linear_path={target}",
                 "--install", f"lpips-linear={not_layers}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a torch tensors file" in err[0] and not target.exists()
