"""qpart.device: the device agent. Client, head cache, head executors (numpy always, torch where
installed), link and compute probes, the agent that runs one job, the library API for applications
(SplitClient), the daemon (`qpart-device serve`), and `qpart-device`.

    from qpart.device import SplitClient

May import: qpart.common and the generated contract (qpart.v1). Never server, training or harness
code, and never torch unless the torch backend is chosen: a board installs numpy, grpcio and protobuf.
"""
__all__ = ["SplitClient", "Result"]


def __getattr__(name: str):
    # imported when first asked for, so that `qpart-device` can set gRPC's environment before grpc loads
    if name in __all__:
        from qpart.device import split_client
        return getattr(split_client, name)
    raise AttributeError(f"module 'qpart.device' has no attribute {name!r}")
