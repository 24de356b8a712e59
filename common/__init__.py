"""qpart.common: the shared core that both peers use.

Lives here: the wire format (quantizer eqs 9-10, dense packing, packed tensors), the layer
description and its validation, the cost model and device profiles, data loading, the one error
hierarchy and its mapping to gRPC status codes, and small runtime helpers.

May import: the generated contract (qpart.v1) and third-party libraries. Never another qpart package.
"""
