#!/usr/bin/env python3
"""An xDS client written with Python's grpcio and the envoy-data-plane package (types
generated from Envoy's own .proto files): an independent peer for `sinew control`.

It opens one state-of-the-world ADS stream as node argv[2] to argv[1] (host:port),
subscribes to clusters and listeners, then to the endpoints and route configurations
they name, and decodes every resource with Envoy's own types. It ACKs every response,
except the first one of the type named by argv[3] (e.g. LDS), which it NACKs.

stdout: one JSON line per response: type, version, nonce, and what it decoded (cluster
names, endpoint addresses by cluster, listener addresses, route clusters); and
"NACKED <type> <version>" / "ACKED <type> <version>" lines as it answers.
"""
import asyncio
import json
import sys

import grpc

from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
)
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.rpc import Status

TYPES = {
    "CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
}
SHORT = {v: k for k, v in TYPES.items()}


def raw(any_message):
    """The packed bytes of an Any, however the generated type exposes them."""
    value = getattr(any_message, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(any_message)


def decode(kind, resources):
    out = {}
    if kind == "CDS":
        out["clusters"] = sorted(Cluster().parse(raw(r)).name for r in resources)
    elif kind == "EDS":
        endpoints = {}
        for r in resources:
            cla = ClusterLoadAssignment().parse(raw(r))
            addresses = []
            for locality in cla.endpoints:
                for lb in locality.lb_endpoints:
                    sa = lb.endpoint.address.socket_address
                    addresses.append(f"{sa.address}:{sa.port_value}")
            endpoints[cla.cluster_name] = sorted(addresses)
        out["endpoints"] = endpoints
    elif kind == "LDS":
        listeners = {}
        routes = []
        for r in resources:
            listener = Listener().parse(raw(r))
            sa = listener.address.socket_address
            listeners[listener.name] = f"{sa.address}:{sa.port_value}"
            for chain in listener.filter_chains:
                for f in chain.filters:
                    hcm = HttpConnectionManager().parse(raw(f.typed_config))
                    routes.append(hcm.rds.route_config_name)
        out["listeners"] = listeners
        out["rds"] = sorted(set(routes))
    elif kind == "RDS":
        clusters = {}
        for r in resources:
            config = RouteConfiguration().parse(raw(r))
            names = []
            for vh in config.virtual_hosts:
                for route in vh.routes:
                    names.append(route.route.cluster)
            clusters[config.name] = names
        out["routes"] = clusters
    return out


async def main():
    address, node_id, nack_type = sys.argv[1], sys.argv[2], sys.argv[3]
    node = Node(id=node_id, cluster="python")
    queue = asyncio.Queue()
    names = {"EDS": [], "RDS": []}
    nacked = set()

    async def requests():
        while True:
            request = await queue.get()
            yield request

    await queue.put(DiscoveryRequest(node=node, type_url=TYPES["CDS"]))
    await queue.put(DiscoveryRequest(type_url=TYPES["LDS"]))
    async with grpc.aio.insecure_channel(address) as channel:
        stream = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=bytes,
            response_deserializer=DiscoveryResponse.FromString,
        )
        acked = {}
        async for response in stream(requests()):
            kind = SHORT.get(response.type_url, response.type_url)
            decoded = decode(kind, response.resources)
            print(json.dumps({"type": kind, "version": response.version_info,
                              "nonce": response.nonce, **decoded}), flush=True)
            if kind == nack_type and kind not in nacked:
                nacked.add(kind)
                await queue.put(DiscoveryRequest(
                    type_url=response.type_url, version_info=acked.get(kind, ""),
                    response_nonce=response.nonce, resource_names=names.get(kind, []),
                    error_detail=Status(code=3, message=f"python refuses {kind} {response.version_info}")))
                print(f"NACKED {kind} {response.version_info}", flush=True)
                continue
            acked[kind] = response.version_info
            await queue.put(DiscoveryRequest(
                type_url=response.type_url, version_info=response.version_info,
                response_nonce=response.nonce, resource_names=names.get(kind, [])))
            print(f"ACKED {kind} {response.version_info}", flush=True)
            # Subscribe by name to what clusters and listeners refer to.
            wanted = {"CDS": ("EDS", decoded.get("clusters")), "LDS": ("RDS", decoded.get("rds"))}.get(kind)
            if wanted and wanted[1] is not None and wanted[1] != names[wanted[0]]:
                names[wanted[0]] = wanted[1]
                await queue.put(DiscoveryRequest(
                    type_url=TYPES[wanted[0]], version_info=acked.get(wanted[0], ""),
                    resource_names=wanted[1]))


if __name__ == "__main__":
    asyncio.run(main())
