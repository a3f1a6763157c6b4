"""Runs one stored job: inputs from the object store in, outputs to the store out.

The service's workers call `run_job`; the job record itself (state, attempts) is the
dispatcher's business, not this function's. The privacy allow patterns come with the job
(`spec.allow`, set by the controller from `OCCLUTRACE_PRIVACY_ALLOW` when the job was created), so
a label the controller accepted is judged by the same rules on the worker.
"""

from __future__ import annotations

from typing import Any

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.jobs.models import JobSpec
from occlutrace_compute.jobs.pipeline import InputFile, JobOutput, run_case
from occlutrace_compute.storage.base import KeyNotFound, ObjectStore
from occlutrace_compute.storage.keys import case_prefix, input_key, output_key

CONTENT_TYPES = {
    "json": "application/json",
    "png": "image/png",
    "ply": "application/octet-stream",
    "stl": "model/stl",
    "obj": "model/obj",
    "mtl": "model/mtl",
    "jpg": "image/jpeg",
}


def _case_inputs(spec: JobSpec, store: ObjectStore):
    """A textured OBJ/PLY's MTL and image, looked up by base name among the case's committed
    (and so already re-made, see service/intake.py) inputs; None when there is no such input."""

    def read(name: str) -> bytes | None:
        try:
            return store.get(input_key(spec.tenant, spec.case, name))
        except (KeyNotFound, ValueError):
            return None

    return read


def _read_inputs(spec: JobSpec, store: ObjectStore) -> dict[str, InputFile]:
    prefix = case_prefix(spec.tenant, spec.case)
    inputs = {}
    for role, key in spec.inputs.items():
        if not key.startswith(prefix):
            raise InputRejected(role, f"input key {key!r} is not inside case {spec.case!r}")
        try:
            inputs[role] = InputFile(key.rsplit("/", 1)[-1], store.get(key), _case_inputs(spec, store))
        except KeyNotFound:
            raise InputRejected(role, f"input {key!r} does not exist (deleted or never uploaded)") from None
    return inputs


def run_job(spec: JobSpec, store: ObjectStore) -> dict[str, Any]:
    """Runs the job and writes every output under the job's prefix, result.json last.

    Returns the result with `outputs` mapping each output name to its object key. Raises
    InputRejected for bad input (state `rejected`); anything else is our fault (`failed`).
    """
    return write_outputs(
        spec, store, run_case(spec.kind, _read_inputs(spec, store), spec.options, spec.case, spec.allow)
    )


def write_outputs(spec: JobSpec, store: ObjectStore, out: JobOutput) -> dict[str, Any]:
    """Every output of the job under its prefix, result.json last (its presence means the rest
    is there); the result with `outputs` mapping each output name to its object key."""
    keys = {name: output_key(spec.tenant, spec.case, spec.job_id, name) for name in out.files}
    for name, data in out.files.items():
        if name != "result.json":
            store.put(keys[name], data, CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream"))
    store.put(keys["result.json"], out.files["result.json"], "application/json")
    return {**out.result, "outputs": keys}
