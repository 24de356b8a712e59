"""qpart.server.serving (online): `qpart-server`. Settings, the transport-free core, the thin gRPC
servicer and its conversions, authentication, admission control, metrics and logs, and the speed
measurements taken at start-up.

May import: qpart.common, qpart.v1, qpart.server.models, qpart.server.planning.
"""
