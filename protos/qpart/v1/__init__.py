"""Generated protobuf and gRPC code for the qpart.v1 contract (see scripts/generate_protos.py)."""
