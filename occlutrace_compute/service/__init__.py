"""The compute service: HTTP controller (FastAPI), dispatcher and workers (Ray), auth, metrics.

Entry points for the CLI: `server.serve_main(argv)` / `server.run_server(host, port, config)`
for `occlutrace serve`, and `client.submit_main(argv)` / `client.submit_cases(...)` for
`occlutrace submit`. See docs/service.md.
"""
