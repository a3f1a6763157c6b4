"""cluster/ray-cluster-aws.yaml against the Ray cluster launcher's own schema (ray-schema.json,
shipped with Ray), plus what OccluTrace needs from it: GPU node types that autoscale, the project
image on every node, token authentication, and Ray start parameters consistent with the chart."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "cluster" / "ray-cluster-aws.yaml"


def validate_config(config: dict) -> None:
    """The launcher's schema check (`ray up` fills in defaults first, then runs the same check)."""
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_matches_the_launcher_schema(config):
    validate_config(config)  # raises jsonschema.ValidationError


def test_schema_check_is_not_a_no_op(config):
    broken = yaml.safe_load(CONFIG.read_text())
    broken["available_node_types"]["gpu-worker-l4"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_gpu_node_types_autoscale_on_the_cuda_image(config):
    types = config["available_node_types"]
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU node type"
    for name, t in gpu_types.items():
        assert t["max_workers"] > t.get("min_workers", 0), f"{name} cannot scale"
        assert t["docker"]["worker_image"].endswith("-cuda"), name
    assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]
    assert config["docker"]["head_image"].endswith("-cpu")
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0  # workers stay off the head


def test_every_node_uses_token_auth(config):
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "~/.ray/auth_token" in config["file_mounts"]
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "--metrics-export-port=8080" in starts  # what the chart's PodMonitor scrapes too
    assert "occlutrace serve" in " ".join(config["head_start_ray_commands"])


def test_no_secret_values_in_the_file(config):
    text = CONFIG.read_text()
    for word in ("SECRET_KEY=", "ACCESS_KEY=", "AUTH_TOKEN=", "aws_secret_access_key"):
        assert word not in text, word
    assert all(not Path(src).is_relative_to(ROOT) for src in config["file_mounts"].values())
