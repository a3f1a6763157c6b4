"""Running the controller: `run_server(host, port, ...)` and `serve_main(argv)` for the CLI."""

from __future__ import annotations

import argparse
import logging

from occlutrace_compute.service.config import ServiceConfig
from occlutrace_compute.service.logs import log, setup_logging

logger = logging.getLogger("occlutrace.controller")


def build_app(config: ServiceConfig, with_dispatcher: bool = True):
    """The app, connected to Ray (joining OCCLUTRACE_RAY_ADDRESS or starting a local Ray)."""
    from occlutrace_compute.service.app import create_app  # heavy (FastAPI, Ray): not at CLI start-up
    from occlutrace_compute.service.link import DispatcherLink

    link = None
    if with_dispatcher:
        link = DispatcherLink(config)
        link.connect()
    return create_app(config, link=link)


def run_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServiceConfig | None = None,
    with_dispatcher: bool = True,
    workers_log_level: str = "INFO",
) -> None:
    """Serve the API until interrupted. Uvicorn's access log is off: ours never logs paths."""
    setup_logging(workers_log_level)
    config = config or ServiceConfig.from_env()
    app = build_app(config, with_dispatcher)
    log(logger, logging.INFO, "controller starting", route=f"{host}:{port}")
    import uvicorn

    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", timeout_keep_alive=30)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `occlutrace serve`; each defaults to its OCCLUTRACE_* variable."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", help="file:///path or s3://bucket/prefix (OCCLUTRACE_STORE)")
    parser.add_argument("--s3-endpoint", help="OCCLUTRACE_S3_ENDPOINT")
    parser.add_argument("--ray-address", help="OCCLUTRACE_RAY_ADDRESS (default: start a local Ray)")
    parser.add_argument("--tokens-file", help="OCCLUTRACE_TOKENS_FILE")
    parser.add_argument("--job-fn", help="module:function run per job (OCCLUTRACE_JOB_FN)")
    parser.add_argument("--cpu-workers", type=int, help="CPU workers when the cluster has no GPU")
    parser.add_argument("--batch-size", type=int, help="jobs per batch handed to a worker")
    parser.add_argument("--max-upload-bytes", type=int, help="largest accepted upload")
    parser.add_argument("--no-dispatcher", action="store_true", help="API only: store jobs, run none")


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig.from_env(
        store=args.store,
        s3_endpoint=args.s3_endpoint,
        ray_address=args.ray_address,
        tokens_file=args.tokens_file,
        job_fn=args.job_fn,
        cpu_workers=args.cpu_workers,
        batch_size=args.batch_size,
        max_upload_bytes=args.max_upload_bytes,
    )


def serve_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="occlutrace serve", description="Run the OccluTrace HTTP controller.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    run_server(args.host, args.port, config_from_args(args), with_dispatcher=not args.no_dispatcher)
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
