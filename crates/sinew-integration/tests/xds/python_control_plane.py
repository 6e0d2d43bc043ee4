#!/usr/bin/env python3
"""An xDS control plane written with Python's grpcio and the envoy-data-plane package
(types generated from Envoy's own .proto files): an independent peer for Sinew's xDS
client. It serves ADS and the four per-type services (CDS, EDS, LDS, RDS), state of the
world and delta, with one listener, one route configuration, one EDS cluster and its
endpoints.

argv:   [port] to listen on (127.0.0.1); 0 or none picks one.

stdin:  one JSON snapshot per line: {"version": "2", "listener_port": 18000,
        "endpoints": ["127.0.0.1:9000"], "bad": false}. "bad": true adds an HTTP filter
        Sinew does not support to the listener, to provoke a NACK. Optional:
        "withhold": ["RDS", "EDS"] never sends those types; "initial_fetch_timeout": "1s"
        sets it on the route and endpoint config sources. "tls_secret": "NAME" puts a
        DownstreamTlsContext on the listener naming that secret over ADS (SDS);
        "secrets": {"NAME": {"cert": PEM, "key": PEM}} serves Secrets (absent: none).
stdout: "LISTENING <port>", then one JSON line per request received: stream ("sotw" or
        "delta"), type (short: CDS, EDS, LDS, RDS), version, nonce, names, error (the
        NACK's message or null), subscribe, unsubscribe, initial_versions, node.
"""
import asyncio
import json
import sys

import grpc

# Importing a message module registers its types for Any unpacking.
import envoy_data_plane.envoy.extensions.filters.http.router.v3  # noqa: F401
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import TransportSocket
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    DownstreamTlsContext,
    Secret,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
)
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
    Resource,
)
from envoy_data_plane.google.protobuf import Any

TYPES = {
    "CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "SDS": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}
SHORT = {v: k for k, v in TYPES.items()}
ADS = {"ads": {}, "resourceApiVersion": "V3"}


def resources(snapshot):
    """name -> Any, per short type, for a snapshot."""
    source = dict(ADS)
    if "initial_fetch_timeout" in snapshot:
        source["initialFetchTimeout"] = snapshot["initial_fetch_timeout"]
    http_filters = []
    if snapshot.get("bad"):
        http_filters.append({"name": "envoy.filters.http.lua"})
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }
    )
    hcm = HttpConnectionManager.from_dict(
        {
            "statPrefix": "web",
            "rds": {"routeConfigName": "routes", "configSource": source},
            "httpFilters": http_filters,
        }
    )
    listener = Listener.from_dict(
        {
            "name": "web",
            "address": {
                "socketAddress": {"address": "127.0.0.1", "portValue": snapshot["listener_port"]}
            },
            "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager"}]}],
        }
    )
    listener.filter_chains[0].filters[0].typed_config = Any(
        type_url="type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        value=bytes(hcm),
    )
    if "tls_secret" in snapshot:
        tls = DownstreamTlsContext.from_dict(
            {
                "commonTlsContext": {
                    "tlsCertificateSdsSecretConfigs": [
                        {"name": snapshot["tls_secret"], "sdsConfig": ADS}
                    ]
                }
            }
        )
        listener.filter_chains[0].transport_socket = TransportSocket(
            name="envoy.transport_sockets.tls",
            typed_config=Any(
                type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                value=bytes(tls),
            ),
        )
    route = RouteConfiguration.from_dict(
        {
            "name": "routes",
            "virtualHosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "svc"}}],
                }
            ],
        }
    )
    cluster = Cluster.from_dict(
        {
            "name": "svc",
            "type": "EDS",
            "connectTimeout": "1s",
            "edsClusterConfig": {"edsConfig": source},
        }
    )
    endpoints = []
    for address in snapshot["endpoints"]:
        host, port = address.rsplit(":", 1)
        endpoints.append(
            {"endpoint": {"address": {"socketAddress": {"address": host, "portValue": int(port)}}}}
        )
    assignment = ClusterLoadAssignment.from_dict(
        {"clusterName": "svc", "endpoints": [{"lbEndpoints": endpoints}]}
    )
    pack = lambda kind, msg: Any(type_url=TYPES[kind], value=bytes(msg))  # noqa: E731
    out = {
        "CDS": {"svc": pack("CDS", cluster)},
        "EDS": {"svc": pack("EDS", assignment)},
        "LDS": {"web": pack("LDS", listener)},
        "RDS": {"routes": pack("RDS", route)},
    }
    if "secrets" in snapshot:
        out["SDS"] = {}
        for name, pem in snapshot["secrets"].items():
            secret = Secret.from_dict(
                {
                    "name": name,
                    "tlsCertificate": {
                        "certificateChain": {"inlineString": pem["cert"]},
                        "privateKey": {"inlineString": pem["key"]},
                    },
                }
            )
            out["SDS"][name] = pack("SDS", secret)
    for kind in snapshot.get("withhold", []):
        del out[kind]
    return out


class State:
    def __init__(self):
        self.version = "0"
        self.snapshot = None
        self.changed = asyncio.Condition()
        self.nonce = 0

    def next_nonce(self):
        self.nonce += 1
        return str(self.nonce)

    async def set(self, snapshot):
        async with self.changed:
            self.snapshot = resources(snapshot)
            self.version = str(snapshot["version"])
            self.changed.notify_all()


def log(entry):
    print(json.dumps(entry), flush=True)


def node_id(request):
    return request.node.id if request.node is not None else None


async def sotw(request_iterator, context, state):
    sent = {}  # kind -> (version, names)
    subscribed = {}  # kind -> names
    out = asyncio.Queue()

    async def reader():
        async for request in request_iterator:
            kind = SHORT.get(request.type_url, request.type_url)
            error = request.error_detail.message if request.error_detail is not None else None
            log({"stream": "sotw", "type": kind, "version": request.version_info,
                 "nonce": request.response_nonce, "names": list(request.resource_names),
                 "error": error, "node": node_id(request)})
            subscribed[kind] = list(request.resource_names)
            await out.put(None)
        await out.put(StopAsyncIteration)

    async def watcher():
        while True:
            async with state.changed:
                await state.changed.wait()
            await out.put(None)

    tasks = [asyncio.create_task(reader()), asyncio.create_task(watcher())]
    try:
        while True:
            item = await out.get()
            if item is StopAsyncIteration:
                return
            if state.snapshot is None:
                continue
            for kind, names in list(subscribed.items()):
                if kind not in state.snapshot:
                    continue
                if sent.get(kind) == (state.version, tuple(names)):
                    continue
                wanted = state.snapshot[kind]
                chosen = [a for n, a in sorted(wanted.items()) if not names or n in names]
                sent[kind] = (state.version, tuple(names))
                yield DiscoveryResponse(version_info=state.version, resources=chosen,
                                        type_url=TYPES[kind], nonce=state.next_nonce())
    finally:
        for t in tasks:
            t.cancel()


async def delta(request_iterator, context, state):
    known = {}  # kind -> {name: version} the client holds
    subscribed = {}  # kind -> set of names, or None for wildcard
    out = asyncio.Queue()

    async def reader():
        async for request in request_iterator:
            kind = SHORT.get(request.type_url, request.type_url)
            error = request.error_detail.message if request.error_detail is not None else None
            log({"stream": "delta", "type": kind, "nonce": request.response_nonce,
                 "subscribe": list(request.resource_names_subscribe),
                 "unsubscribe": list(request.resource_names_unsubscribe),
                 "initial_versions": dict(request.initial_resource_versions),
                 "error": error, "node": node_id(request)})
            if kind not in subscribed:
                names = set(request.resource_names_subscribe)
                subscribed[kind] = None if (kind in ("CDS", "LDS") and not names) or "*" in names else names
                known[kind] = dict(request.initial_resource_versions)
            elif subscribed[kind] is not None:
                subscribed[kind] |= set(request.resource_names_subscribe)
                subscribed[kind] -= set(request.resource_names_unsubscribe)
            await out.put(None)
        await out.put(StopAsyncIteration)

    async def watcher():
        while True:
            async with state.changed:
                await state.changed.wait()
            await out.put(None)

    tasks = [asyncio.create_task(reader()), asyncio.create_task(watcher())]
    try:
        while True:
            item = await out.get()
            if item is StopAsyncIteration:
                return
            if state.snapshot is None:
                continue
            for kind, names in list(subscribed.items()):
                if kind not in state.snapshot:
                    continue
                current = {n: a for n, a in state.snapshot[kind].items() if names is None or n in names}
                held = known.setdefault(kind, {})
                changed = []
                for name, res in sorted(current.items()):
                    version = str(hash(bytes(res)) & 0xFFFFFFFF)
                    if held.get(name) != version:
                        changed.append(Resource(name=name, version=version, resource=res))
                        held[name] = version
                removed = [n for n in list(held) if n not in current]
                for n in removed:
                    del held[n]
                if changed or removed:
                    yield DeltaDiscoveryResponse(system_version_info=state.version,
                                                 resources=changed, type_url=TYPES[kind],
                                                 removed_resources=removed,
                                                 nonce=state.next_nonce())
    finally:
        for t in tasks:
            t.cancel()


async def main():
    state = State()
    server = grpc.aio.server()
    services = {
        "envoy.service.discovery.v3.AggregatedDiscoveryService": "AggregatedResources",
        "envoy.service.cluster.v3.ClusterDiscoveryService": "Clusters",
        "envoy.service.endpoint.v3.EndpointDiscoveryService": "Endpoints",
        "envoy.service.listener.v3.ListenerDiscoveryService": "Listeners",
        "envoy.service.route.v3.RouteDiscoveryService": "Routes",
    }
    # grpc.aio tells streaming handlers by being async generator functions themselves.
    async def sotw_stream(it, ctx):
        async for response in sotw(it, ctx, state):
            yield response

    async def delta_stream(it, ctx):
        async for response in delta(it, ctx, state):
            yield response

    handlers = []
    for service, noun in services.items():
        # One stream function per variant serves every type: a per-type stream is an
        # aggregated one that only ever carries its own type.
        handlers.append(grpc.method_handlers_generic_handler(service, {
            f"Stream{noun}": grpc.stream_stream_rpc_method_handler(
                sotw_stream,
                request_deserializer=DiscoveryRequest.FromString,
                response_serializer=bytes,
            ),
            f"Delta{noun}": grpc.stream_stream_rpc_method_handler(
                delta_stream,
                request_deserializer=DeltaDiscoveryRequest.FromString,
                response_serializer=bytes,
            ),
        }))
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port(f"127.0.0.1:{int(sys.argv[1]) if len(sys.argv) > 1 else 0}")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.strip():
            await state.set(json.loads(line))
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
