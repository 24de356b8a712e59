"""qpart.server.planning (online): plan ids, the catalog as stored beside a model, and the planner
that prices the catalog's patterns for one request (paper Algorithm 2).

May import: qpart.common, qpart.v1, qpart.server.models. Never the offline packages.
"""
