"""A gRPC server written by others' hands, for Sinew's gRPC health-check tests.

Python's grpcio serving the standard health service (grpc.health.v1.Health, from the
`grpcio-health-checking` package) for one service name, plus that service's `Unary`
method, which answers with the server's own name so a test can tell which endpoint a
request reached. The answer is a google.protobuf.StringValue: field 1, a string, which is
how the tests' `Msg` (text = field 1) decodes it.

Usage: health_server.py NAME SERVICE. Prints `LISTENING <port>` once it serves (on
127.0.0.1, an ephemeral port), then reads lines from stdin: `SERVING` or `NOT_SERVING`
sets SERVICE's status, answered by `SET <status>`. It starts SERVING and exits when stdin
closes.
"""

import sys
from concurrent import futures

import grpc
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    name, service = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_service = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)

    def unary(_request, _context):
        return wrappers_pb2.StringValue(value=name)

    handler = grpc.method_handlers_generic_handler(
        service,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=lambda raw: raw,
                response_serializer=lambda message: message.SerializeToString(),
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    health_service.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.start()
    print(f"LISTENING {port}", flush=True)
    for line in sys.stdin:
        status = line.strip()
        if status not in ("SERVING", "NOT_SERVING"):
            print(f"UNKNOWN {status}", flush=True)
            continue
        health_service.set(service, getattr(health_pb2.HealthCheckResponse, status))
        print(f"SET {status}", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
