"""Plan ids under a valid signature are still parsed strictly: what the server signed is checked as what a peer
sends (an audit's 'soon' and 10**400 expiries once got INTERNAL)."""
import pytest

from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.planning.plans import MAX_TTL_S, PlanSigner, PlanSpec

KEY = b"k" * 32
TOKEN = "p3:lenet:v:7:8,8:8:t"


def signed(signer: PlanSigner, token: str, expires: str) -> str:
    """An id as `sign` makes it, with any expiry text, under the signer's real MAC."""
    body = f"{token}:{expires}"
    return f"{body}:{signer._mac(body)}"


@pytest.fixture
def clock():
    return [1_000_000.0]


@pytest.fixture
def signer(clock):
    return PlanSigner(KEY, ttl_s=60, clock=lambda: clock[0])


@pytest.mark.parametrize("expires", ["soon", "", "1e9", "+1000060", " 1000060", "1000060 ", "1_000_060", "-1",
                                     "\u0661\u0660\u0660", "1000060.5", "9" * 400, str(10 ** 400), "0x10"])
def test_a_malformed_expiry_under_a_valid_signature_is_invalid_argument(signer, expires):
    plan_id = signed(signer, TOKEN, expires)
    with pytest.raises(InvalidArgument, match="malformed expiry|longer than"):
        signer.verify(plan_id)
    with pytest.raises(InvalidArgument):
        PlanSigner.expiry(plan_id)


def test_an_expiry_beyond_any_lifetime_is_refused(signer, clock):
    far = signed(signer, TOKEN, str(int(clock[0] + MAX_TTL_S + 10)))
    with pytest.raises(InvalidArgument, match="further ahead than any plan id lifetime"):
        signer.verify(far)
    assert signer.verify(signed(signer, TOKEN, str(int(clock[0] + 3600)))) == TOKEN   # longer than ttl_s: a replica's


def test_a_past_expiry_is_failed_precondition(signer, clock):
    with pytest.raises(FailedPrecondition, match="expired 10 s ago"):
        signer.verify(signed(signer, TOKEN, str(int(clock[0]) - 10)))
    with pytest.raises(FailedPrecondition):
        signer.verify(signed(signer, TOKEN, "0"))


def test_check_expiry_follows_the_clock(signer, clock):
    expires = PlanSigner.expiry(signer.sign(TOKEN))
    assert expires == 1_000_060
    signer.check_expiry(expires)
    clock[0] += 60
    signer.check_expiry(expires)           # the last second is still served
    clock[0] += 1
    with pytest.raises(FailedPrecondition, match="expired 1 s ago.*call Plan again"):
        signer.check_expiry(expires)


@pytest.mark.parametrize("token", [
    "p3:lenet:v:+7:8,8:8:t", "p3:lenet:v: 7:8,8:8:t", "p3:lenet:v:7_0:8,8:8:t", "p3:lenet:v:\u0667:8,8:8:t",
    "p3:lenet:v:" + "9" * 300 + ":8,8:8:t", "p3:lenet:v:-1:8,8:8:t", "p3:lenet:v::8,8:8:t", "p3:lenet:v:1e3:8,8:8:t",
    "p3:lenet:v:7:8,,8:8:t", "p3:lenet:v:7:8,8,:8:t", "p3:lenet:v:7::8:t", "p3:lenet:v:7:+8,8:8:t",
    "p3:lenet:v:7:8,8:9999:t", "p3:lenet:v:7:8,8:8:x", "p3:lenet:v:7:8,8:8:",
    "p3:../etc:v:7:8,8:8:t", "p3::v:7:8,8:8:t", "p3:" + "a" * 65 + ":v:7:8,8:8:t", "p2:lenet:v:7:8,8:8:t",
    "p3:lenet:v:7:8,8:8", "p3:lenet:v:7:8,8:8:t:extra", "", ":::::::",
])
def test_malformed_token_bodies_are_invalid_argument(token):
    with pytest.raises(InvalidArgument):
        PlanSpec.parse(token)


def test_a_well_formed_token_round_trips():
    spec = PlanSpec.parse(TOKEN)
    assert spec.token() == TOKEN and spec.split.cut == 7 and spec.split.weight_bits == (8, 8)
