"""Random `text` histories thrown at the callback: never a 5xx, never over 182, never an apology, never an ERROR.

An apology `END` is what the error middleware answers to any exception, so an engine that crashed
on every hop would still answer 200 with a short END: the apology text and the ERROR log line
are what tell a crash from an answer.
"""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Gateway, make_config, our_errors
from flows.text import USSD_LIMIT, ussd_cost

# Inputs a keypad makes, navigation keys, and whatever else a broken proxy might send.
keys = st.sampled_from(["", "0", "00", "1", "2", "3", "4", "5", "6", "9", "98", "99",
                        "3201235708900002", "17081990", "31022000", "Sukamaju", "K7ABCDE"])
junk = st.text(max_size=60)
inputs = st.lists(st.one_of(keys, keys, junk), max_size=12)
phones = st.sampled_from(["+6281234567890", "+254711082300", "+255754123456"])
counter = itertools.count()
# caplog and the gateway live for the whole test, across examples: each example clears the records first.
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(gateway, caplog, status, body):
    assert status == 200, (status, body)
    assert body.startswith(("CON ", "END ")), body
    assert ussd_cost(body) <= USSD_LIMIT, body
    assert not any(sorry in body for sorry in gateway.apologies()), body
    errors = [r.getMessage() for r in our_errors(caplog.records)]
    assert not errors, errors


@pytest.fixture
async def gateway(tmp_path, clock):
    """A gateway without per-phone limits: three phones dial hundreds of sessions here, and every one of
    them must reach the menus rather than the polite refusal (test_rate_limits tests the limits)."""
    gw = await Gateway(make_config(tmp_path / "var", limits__ussd_sessions_per_hour=0,
                                   limits__submissions_per_day=0), clock).start()
    yield gw
    await gw.stop()


async def hop(gateway, session, phone, text):
    return await gateway.post("/ussd/africastalking", {
        "sessionId": session, "serviceCode": "*384*1#", "phoneNumber": phone, "text": text})


@EXAMPLES
@given(typed=inputs, phone=phones)
async def test_ussd_property_hop_by_hop(gateway, caplog, typed, phone):
    caplog.clear()
    session = f"prop-{next(counter)}"
    status, body, _ = await hop(gateway, session, phone, "")
    check(gateway, caplog, status, body)
    history = []
    for key in typed:
        history.append(key)
        status, body, _ = await hop(gateway, session, phone, "*".join(history))
        check(gateway, caplog, status, body)


@EXAMPLES
@given(text=st.one_of(st.text(max_size=300), st.lists(keys, max_size=15).map("*".join)), phone=phones)
async def test_ussd_property_any_text_at_once(gateway, caplog, text, phone):
    caplog.clear()
    status, body, _ = await hop(gateway, f"raw-{next(counter)}", phone, text)
    check(gateway, caplog, status, body)
