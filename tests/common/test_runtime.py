import gc

from qpart.common import runtime


def test_long_lived_objects_leave_the_collectors_reach():
    kept = [[i] for i in range(1000)]            # alive across the call, like models and catalogs
    before = gc.get_freeze_count()
    try:
        runtime.freeze_long_lived()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()
