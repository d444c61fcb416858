"""Random `text` histories thrown at the callback: never a 5xx, never over 182, never a traceback."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.text import USSD_LIMIT, ussd_cost

# Inputs a keypad makes, navigation keys, and whatever else a broken proxy might send.
keys = st.sampled_from(["", "0", "00", "1", "2", "3", "4", "5", "6", "9", "98", "99",
                        "3201234567890123", "17081990", "31022000", "Sukamaju", "K7ABCDE"])
junk = st.text(max_size=60)
inputs = st.lists(st.one_of(keys, keys, junk), max_size=12)
phones = st.sampled_from(["+6281234567890", "+254711082300", "+255754123456"])
counter = itertools.count()


def check(status, body):
    assert status == 200, (status, body)
    assert body.startswith(("CON ", "END ")), body
    assert ussd_cost(body) <= USSD_LIMIT, body
    assert "Traceback" not in body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typed=inputs, phone=phones)
async def test_ussd_property_hop_by_hop(gateway, typed, phone):
    session = f"prop-{next(counter)}"
    history = []
    status, body, _ = await gateway.post("/ussd/africastalking", {
        "sessionId": session, "serviceCode": "*384*1#", "phoneNumber": phone, "text": ""})
    check(status, body)
    for key in typed:
        history.append(key)
        status, body, _ = await gateway.post("/ussd/africastalking", {
            "sessionId": session, "serviceCode": "*384*1#", "phoneNumber": phone, "text": "*".join(history)})
        check(status, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=300), st.lists(keys, max_size=15).map("*".join)), phone=phones)
async def test_ussd_property_any_text_at_once(gateway, text, phone):
    status, body, _ = await gateway.post("/ussd/africastalking", {
        "sessionId": f"raw-{next(counter)}", "serviceCode": "*384*1#", "phoneNumber": phone, "text": text})
    check(status, body)
