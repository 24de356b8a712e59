"""qpart.testbed: the benchmark and testbed harness, apart from the runtime.

Network namespaces and tc shaping, the delay relay, the end-to-end benchmark and its report, the
device-side bench worker, the load generator, the reliability scenarios, hostile-message strategies,
catalog test-set figures, the demo and the spawning of server processes. Installed with the dev
extra's dependencies (hypothesis, matplotlib); adds `qpart testbed|bench|demo` to the tool.

May import: everything. Nothing imports it (the tests and bench/ scripts use it).
"""
