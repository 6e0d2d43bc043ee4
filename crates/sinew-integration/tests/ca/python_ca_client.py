#!/usr/bin/env python3
"""An independent client of Sinew's mesh CA, written with grpcio, `cryptography`, the
`spiffe` package and envoy-data-plane (types generated from Envoy's own .proto files).

argv: CA address (host:port), root bundle file, token file, output directory.

1. Makes its own P-256 key and a CSR that asks for a name it should not get.
2. Calls istio.v1.auth.IstioCertificateService/CreateCertificate over TLS with the
   token as a bearer credential (the two small protobuf messages are encoded by hand,
   from their field numbers).
3. Parses the returned chain with the `spiffe` package (X509Svid), which checks that the
   leaf holds exactly one SPIFFE ID and fits the key.
4. Over mTLS with that SVID, opens an SDS stream (SecretDiscoveryService/StreamSecrets)
   for ROOTCA and decodes the Secret with Envoy's types.
5. Asks again with a wrong token, and with a garbage CSR.

stdout: one JSON object: spiffe_id, dns_names, chain length, the seconds of life, the
bundle's certificate count, and the gRPC status codes of the two bad requests.
"""
import datetime
import json
import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from spiffe import X509Svid

from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import Secret
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_request(csr_pem, seconds):
    body = csr_pem.encode()
    return b"\x0a" + varint(len(body)) + body + b"\x18" + varint(seconds)


def decode_response(data):
    chain, i = [], 0
    while i < len(data):
        tag = data[i]
        i += 1
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if tag == 0x0A:
            chain.append(data[i : i + length].decode())
        i += length
    return chain


def create(channel, csr_pem, token):
    call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    return decode_response(
        call(encode_request(csr_pem, 3600), metadata=[("authorization", f"Bearer {token}")], timeout=10)
    )


def raw(any_message):
    """The packed bytes of an Any, however the generated type exposes them."""
    value = getattr(any_message, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(any_message)


def code_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def main():
    address, bundle_path, token_path, out_dir = sys.argv[1:5]
    roots = open(bundle_path, "rb").read()
    token = open(token_path).read().strip()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone-else")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("admin.example"),
                    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/kube-system/sa/admin"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))
    chain = create(channel, csr_pem, token)
    chain_pem = "".join(chain).encode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    open(f"{out_dir}/svid.pem", "wb").write(chain_pem)
    open(f"{out_dir}/svid.key", "wb").write(key_pem)
    svid = X509Svid.parse(chain_pem, key_pem)
    leaf = svid.leaf
    try:
        dns = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    life = leaf.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)

    # SDS over mTLS with the SVID just issued.
    mtls = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(root_certificates=roots, private_key=key_pem, certificate_chain=chain_pem),
    )
    stream = mtls.stream_stream(
        "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
        request_serializer=bytes,
        response_deserializer=DiscoveryResponse.FromString,
    )
    request = DiscoveryRequest(
        node=Node(id="python-sds-client"), resource_names=["ROOTCA"], type_url=SECRET_TYPE
    )
    responses = stream(iter([request]), timeout=10)
    first = next(responses)
    secrets = [Secret().parse(raw(r)) for r in first.resources]
    responses.cancel()
    bundle = [
        x509.load_pem_x509_certificates(s.validation_context.trusted_ca.inline_bytes)
        for s in secrets
        if s.name == "ROOTCA"
    ]

    bad_token = code_of(lambda: create(channel, csr_pem, "not-a-token"))
    bad_csr = code_of(lambda: create(channel, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", token))
    print(
        json.dumps(
            {
                "spiffe_id": str(svid.spiffe_id),
                "dns_names": dns,
                "chain": len(chain),
                "seconds_of_life": int(life.total_seconds()),
                "sds_secrets": [s.name for s in secrets],
                "bundle_certificates": sum(len(b) for b in bundle),
                "bad_token": bad_token,
                "bad_csr": bad_csr,
            }
        )
    )


if __name__ == "__main__":
    main()
