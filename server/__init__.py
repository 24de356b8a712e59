"""qpart.server: the runtime that serves models and plans splits, one sub-package per concern.

    models/       the model repository, the importer (BatchNorm folding), heads, float evaluation
    training/     offline: the model zoo and `qpart train`
    calibration/  offline: pattern accuracy, the accuracy model (eqs 18-22), bit allocation, catalog build
    planning/     online: plan ids, the catalog as stored, the planner (paper Algorithm 2)
    serving/      online: settings, the transport-free core, the thin gRPC servicer, auth, metrics

The online path (serving, planning, models) never imports the offline one (training, calibration).
May import: qpart.common, qpart.v1. Never qpart.device, qpart.cli or qpart.testbed.
"""
