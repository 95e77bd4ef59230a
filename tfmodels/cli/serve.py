"""``tfmodels serve``: the embedded TensorFlow-Serving-compatible model server."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve exported SavedModels with the TensorFlow Serving API (gRPC + REST)",
        description=(
            "Serve the models listed in a models.config (TensorFlow Serving's ModelServerConfig "
            "text proto) over gRPC (PredictionService, ModelService, health) and REST "
            "(/v1/models/NAME[:predict|/metadata], /monitoring/prometheus/metrics), like "
            "tensorflow_model_server. New version folders under each base path are picked up "
            "while serving. SIGTERM or Ctrl-C stops gracefully."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-config", required=True, metavar="FILE",
                   help="models.config (model_config_list); relative base_paths are relative to it")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = pick a free one)")
    p.add_argument("--rest-port", type=int, default=8501, help="REST port (0 = free port, -1 = no REST)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0 exposes the server to the network)")
    p.add_argument("--enable-batching", action="store_true", help="batch concurrent Predict calls")
    p.add_argument("--batching-parameters-file", metavar="FILE",
                   help="BatchingParameters text proto (implies --enable-batching)")
    p.add_argument("--poll-seconds", type=float, default=1.0,
                   help="how often to look for new versions in the base paths (<= 0: never)")
    p.add_argument("--max-request-mb", type=int, default=256, help="largest request accepted, in MiB")
    p.add_argument("--grpc-threads", type=int, default=64, help="gRPC worker threads")
    p.add_argument("--max-rest-body-mb", type=float, default=16,
                   help="largest REST body accepted, in MiB (JSON costs ~10x its size in memory; 413 above)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a REST request (or a gRPC call without a deadline) may run before it is "
                        "cancelled (<= 0: no limit)")
    p.add_argument("--rest-max-connections", type=int, default=512, help="open REST connections at most")
    p.add_argument("--rest-idle-timeout", type=float, default=15.0,
                   help="seconds for a REST request's headers to arrive, and for an idle keep-alive connection")
    p.add_argument("--rest-body-timeout", type=float, default=60.0, help="seconds for a REST body to arrive")
    p.add_argument("--max-load-retries", type=int, default=5,
                   help="retries of a version that failed to load (like --max_num_load_retries)")
    p.add_argument("--load-retry-seconds", type=float, default=5.0,
                   help="wait before the first retry; it doubles after each one")
    p.add_argument("--no-reload-config", action="store_true",
                   help="refuse ModelService.HandleReloadConfigRequest (PERMISSION_DENIED): it lets anyone "
                        "who reaches the gRPC port replace the served models")
    p.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint on the REST port")
    p.set_defaults(func=run)


def run(args) -> int:
    import tfmodels  # noqa: F401  (tf-keras guard before TensorFlow is imported)
    from serving.config import BatchingParameters, load_batching_parameters, load_model_config
    from serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_model_config(args.model_config)
    batching = None
    if args.batching_parameters_file:
        batching = load_batching_parameters(args.batching_parameters_file)
    elif args.enable_batching:
        batching = BatchingParameters()
    server = ModelServer(config, port=args.port, rest_port=None if args.rest_port < 0 else args.rest_port,
                         host=args.host, batching=batching, poll_seconds=args.poll_seconds,
                         max_request_bytes=args.max_request_mb * 1024 * 1024,
                         grpc_threads=args.grpc_threads, max_rest_body_bytes=int(args.max_rest_body_mb * 1024 * 1024),
                         request_timeout=args.request_timeout if args.request_timeout > 0 else None,
                         rest_max_connections=args.rest_max_connections, rest_idle_timeout=args.rest_idle_timeout,
                         rest_body_timeout=args.rest_body_timeout, max_load_retries=args.max_load_retries,
                         load_retry_seconds=args.load_retry_seconds,
                         allow_reload_config=not args.no_reload_config, metrics=not args.no_metrics)
    server.start()
    # Parsed by tests and scripts that start the server on port 0.
    print(f"serving gRPC {args.host}:{server.grpc_port} REST "
          f"{args.host + ':' + str(server.rest_port) if server.rest_port else 'off'} "
          f"models {server.manager.available()}", flush=True)
    server.wait()
    print("stopped", flush=True)
    sys.stderr.flush()
    # Everything is closed and flushed; skip TensorFlow's slow interpreter teardown
    # (seconds) so orchestrators see a prompt exit after SIGTERM.
    os._exit(0)
