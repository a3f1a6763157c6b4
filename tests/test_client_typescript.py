"""A TypeScript client typed from the served OpenAPI document: openapi-typescript generates the
types, and tsc type-checks a round trip written with openapi-fetch (upload -> job -> status ->
result -> purge) against them, plus calls that the schema must refuse (a wrong kind, a missing
path parameter, a misspelt field), each of which must be a type error at its line.
Skipped where node/npm are absent or the npm registry cannot be reached; the tools are installed
once per machine (OCCLUTRACE_TS_TOOLS, default ~/.cache/occlutrace-ts-tools)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from occlutrace_compute.service.app import create_app
from occlutrace_compute.service.config import ServiceConfig

TOOLS = ("openapi-typescript@7", "typescript@5", "openapi-fetch@0")

ROUND_TRIP = """\
import createClient from "openapi-fetch";
import type { paths, components } from "./api";

export async function roundTrip(base: string, token: string, fixed: Blob, moving: Blob): Promise<number> {
  const api = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${token}` } });
  for (const [name, blob] of [["fixed.stl", fixed], ["moving.stl", moving]] as const) {
    const form = new FormData();
    form.append("file", blob, name);
    const up = await api.POST("/v1/cases/{case}/files", {
      params: { path: { case: "case-1" }, header: { "X-Request-ID": "ts-1" } },
      body: { file: name }, bodySerializer: () => form });  // the multipart body is the FormData
    if (up.error) throw new Error(up.error.detail);
    const stored: components["schemas"]["UploadInfo"] = up.data;
    console.log(stored.name, stored.bytes);
  }
  const created = await api.POST("/v1/jobs", {
    params: { header: { "Idempotency-Key": "ts-key-1" } },
    body: { case: "case-1", kind: "pair", inputs: { fixed: "fixed.stl", moving: "moving.stl" } } });
  if (created.error) throw new Error(`${created.error.status} ${created.error.error}`);
  const jobId: string = created.data.job_id;
  const status = await api.GET("/v1/jobs/{job_id}", { params: { path: { job_id: jobId } } });
  const state: components["schemas"]["JobStatus"]["state"] | undefined = status.data?.state;
  const result = await api.GET("/v1/jobs/{job_id}/result", { params: { path: { job_id: jobId } } });
  const urls: string[] = (result.data?.files ?? []).map((f) => f.url);
  const purged = await api.DELETE("/v1/cases/{case}", { params: { path: { case: "case-1" } } });
  return (purged.data?.count ?? 0) + urls.length + (state === "succeeded" ? 1 : 0);
}
"""

REFUSED = """\
import createClient from "openapi-fetch";
import type { paths } from "./api";

export async function refused(api: ReturnType<typeof createClient<paths>>): Promise<void> {
  await api.POST("/v1/jobs", { body: { case: "c", kind: "triple", inputs: {} } }); // BAD: kind
  await api.GET("/v1/jobs/{job_id}", { params: { path: {} } }); // BAD: job_id
  const r = await api.GET("/v1/jobs/{job_id}", { params: { path: { job_id: "j" } } });
  console.log(r.data?.job_idd); // BAD: field
}
"""


def _tools() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed")
    root = Path(os.environ.get("OCCLUTRACE_TS_TOOLS", Path.home() / ".cache" / "occlutrace-ts-tools"))
    bins = [root / "node_modules" / ".bin" / b for b in ("openapi-typescript", "tsc")]
    if not all(b.exists() for b in bins) or not (root / "node_modules" / "openapi-fetch").exists():
        root.mkdir(parents=True, exist_ok=True)
        try:
            out = subprocess.run(
                ["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", *TOOLS],
                check=False,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install timed out (registry unreachable?)")
        if out.returncode != 0:
            pytest.skip(f"npm install failed (registry unreachable?): {out.stderr[-300:]}")
    return root


def test_typescript_types_from_the_schema_check_a_round_trip_and_refuse_bad_calls(tmp_path):
    tools = _tools()
    app = create_app(ServiceConfig.from_env(store=f"file://{tmp_path / 'store'}", staging_sweep_s=0))
    (tmp_path / "openapi.json").write_text(json.dumps(app.openapi()))
    (tmp_path / "node_modules").symlink_to(tools / "node_modules")
    bin_dir = tools / "node_modules" / ".bin"
    gen = subprocess.run(
        [str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "api.d.ts"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    (tmp_path / "round_trip.ts").write_text(ROUND_TRIP)
    (tmp_path / "refused.ts").write_text(REFUSED)
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "target": "es2022",
                    "module": "esnext",
                    "moduleResolution": "bundler",
                    "lib": ["es2022", "dom"],
                    "skipLibCheck": True,
                    "types": [],
                },
                "files": ["round_trip.ts", "refused.ts"],
            }
        )
    )
    check = subprocess.run(
        [str(bin_dir / "tsc"), "-p", "tsconfig.json", "--pretty", "false"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = re.findall(r"^(\S+\.ts)\((\d+),\d+\): error", check.stdout, re.MULTILINE)
    bad_lines = {str(i + 1) for i, line in enumerate(REFUSED.splitlines()) if "// BAD" in line}
    assert not [e for e in errors if e[0] != "refused.ts"], check.stdout  # the round trip type-checks
    assert {line for f, line in errors if f == "refused.ts"} == bad_lines, check.stdout  # each bad call refused
