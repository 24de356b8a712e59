"""qpart.device: the device agent. Client, head cache, head executor, link and compute probes, the
agent that runs one job, and `qpart-device`.

May import: qpart.common and the generated contract (qpart.v1). Never server, training or harness code.
"""
