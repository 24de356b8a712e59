"""qpart.server.training (offline): the model zoo and `qpart train`, which trains on Fashion-MNIST
and writes a model into the repository with its measured accuracy.

May import: qpart.common, qpart.v1, qpart.server.models. Nothing online imports it.
"""
