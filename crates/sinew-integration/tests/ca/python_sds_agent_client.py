#!/usr/bin/env python3
"""An SDS client, as an Envoy beside a Sinew proxy would be: grpcio over a Unix socket,
Envoy's own types from envoy-data-plane, the `spiffe` package to read the SVID.

argv: the socket path. It streams the secrets `default` and `ROOTCA`, reads the first
response and then the next one the agent pushes (after the proxy renews its
certificate), and prints one JSON object: the SPIFFE ID in each, whether the serial
changed, and how many roots the bundle holds.
"""
import json
import sys

import grpc
from cryptography import x509
from spiffe import X509Svid

from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import Secret
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def raw(any_message):
    value = getattr(any_message, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(any_message)


def read(response):
    secrets = {s.name: s for s in (Secret().parse(raw(r)) for r in response.resources)}
    cert = secrets["default"].tls_certificate
    svid = X509Svid.parse(cert.certificate_chain.inline_bytes, cert.private_key.inline_bytes)
    roots = x509.load_pem_x509_certificates(secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes)
    return str(svid.spiffe_id), svid.leaf.serial_number, len(roots)


def main():
    # gRPC names a Unix socket's authority after its path, which is no valid HTTP/2
    # authority; name it as Envoy would name a cluster.
    channel = grpc.insecure_channel(f"unix:{sys.argv[1]}", options=[("grpc.default_authority", "localhost")])
    stream = channel.stream_stream(
        "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
        request_serializer=bytes,
        response_deserializer=DiscoveryResponse.FromString,
    )
    request = DiscoveryRequest(
        node=Node(id="envoy-beside-sinew"), resource_names=["default", "ROOTCA"], type_url=SECRET_TYPE
    )
    responses = stream(iter([request]), timeout=30)
    first_id, first_serial, roots = read(next(responses))
    second_id, second_serial, _ = read(next(responses))
    responses.cancel()
    print(
        json.dumps(
            {
                "spiffe_id": first_id,
                "renewed_spiffe_id": second_id,
                "serial_changed": first_serial != second_serial,
                "roots": roots,
            }
        )
    )


if __name__ == "__main__":
    main()
