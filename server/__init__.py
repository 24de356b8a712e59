"""The qpart server: model repository, training, planner, head builder, tail executor and gRPC service."""
