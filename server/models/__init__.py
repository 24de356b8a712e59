"""qpart.server.models: the model repository (network description, safetensors weights, card), the
importer from torch modules, heads cut from a model, and float evaluation helpers.

May import: qpart.common, qpart.v1. Never the other server packages.
"""
