"""The hostile client's attacks against a live server while good devices run: each gets a status that names
the problem (never INTERNAL or UNKNOWN), the good devices see no error, and the server's memory stays bounded."""
from qpart.testbed import attacks


def test_attacks_cost_the_good_devices_nothing(models_dir, catalogs):
    r = attacks.under_attack(models_dir, sessions=6, seconds=10)
    statuses = r["attacks"]
    for name, counts in statuses.items():
        assert not {"INTERNAL", "UNKNOWN"} & set(counts), (name, counts)
    assert statuses["Plan with clock_hz 1e200 (overflowed to INTERNAL)"] == {"INVALID_ARGUMENT": 20}
    assert statuses["Plan naming a 20 KB model"] == {"INVALID_ARGUMENT": 20} or \
        statuses["Plan naming a 20 KB model"] == {"NOT_FOUND": 20}
    assert statuses["made-up plan ids (each another fixed split)"] == {"INVALID_ARGUMENT": 20}
    assert statuses["1,024 inputs into vgg8 next to its input"] == {"RESOURCE_EXHAUSTED": 20}
    assert statuses["Plan listing 100,000 held heads"] == {"INVALID_ARGUMENT": 20}
    idle = statuses["125 idle Infer streams on one connection"]
    assert idle.get("RESOURCE_EXHAUSTED") == 125 - 32 and idle.get("CANCELLED") == 32, idle
    good = r["good"]
    assert good["answered"] > 0 and not good["errors"], good
    assert r["memory_peak_mb"] - r["memory_before_mb"] < 200, r
