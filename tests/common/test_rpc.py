import grpc
import pytest

from qpart.common import errors, rpc


@pytest.mark.parametrize("cls", rpc._ERROR_CLASSES)
def test_every_error_maps_to_its_status_and_back(cls):
    code = rpc.status_code(cls("why"))
    assert code.name == cls.status
    back = rpc.error_from_status(code, "why")
    assert type(back) is cls and str(back) == "why"


def test_unknown_status_keeps_its_name():
    error = rpc.error_from_status(grpc.StatusCode.ABORTED, "x")
    assert type(error) is errors.QpartError and error.status == "ABORTED"
