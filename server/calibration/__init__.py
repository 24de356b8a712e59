"""qpart.server.calibration (offline): what a quantization pattern costs in accuracy, the accuracy
model fitted on validation data (eqs 18-22), the bit allocation (eqs 28-40) and the build of the
certified catalog (paper Algorithm 1).

May import: qpart.common, qpart.v1, qpart.server.models, qpart.server.planning, qpart.server.training.
Nothing online imports it.
"""
