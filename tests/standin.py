"""A loopback stand-in of Africa's Talking's messaging API, for the real SDK to talk to.

It answers `POST /version1/messaging` as the real one does: the API key in
the `apiKey` header, form fields `username`, `to`, `message`, `bulkSMSMode`,
optional `from`; a JSON answer with `Content-Type: application/json` exactly
(the SDK parses nothing else) listing each recipient's status code.

A premium message (the SDK's `send_premium`, sent to the content host: the
same path here) has `bulkSMSMode` 0, the short code in `from`, and `keyword`
and `linkId`: a request that is premium by one of them but lacks or gets
wrong another is refused with a 400, as a misbilled message would be. A test
scripts what the next requests get: a 500; a `timeout` (no answer until
the test calls `release()`, then a 504: the message was not sent); a `slow`
success (the message is sent at once, but the answer waits for `release()`,
as when a link drops mid-answer); a captive portal's HTML page; or a
per-recipient status code.

Held requests never wait on a timer: a test waits until `holding` says the
request is in hand, does what it needs (lets the client give up, kills the
gateway), then calls `release()` and waits until `holding` is 0 again.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

from aiohttp import web

STATUS = {100: "Processed", 101: "Success", 102: "Queued", 401: "RiskHold", 402: "InvalidSenderId",
          403: "InvalidPhoneNumber", 404: "UnsupportedNumberType", 405: "InsufficientBalance",
          406: "UserInBlacklist", 407: "CouldNotRoute", 409: "DoNotDisturbRejection",
          500: "InternalServerError", 501: "GatewayError", 502: "RejectedByGateway"}


class AfricasTalkingStandIn:
    def __init__(self, api_key: str = "test-key", username: str = "kentongan", short_code: str = "21525",
                 keyword: str = "KENTONGAN"):
        self.api_key = api_key
        self.username = username
        self.short_code = short_code     # the premium short code of the account, and its keyword
        self.keyword = keyword
        self.received: list[dict] = []   # every request that reached us, answered or not
        self.accepted: list[dict] = []   # the messages we answered with a success code
        self.plan: list[object] = []     # the next requests get: "500", "timeout", "slow", "html", or a code
        self.holding = 0                 # requests in hand whose answer waits for `release()`
        self._released = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self._kept: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/version1"

    async def start(self) -> "AfricasTalkingStandIn":
        """Listen on a free port, or again on the port `stop(keep_port=True)` kept."""
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/version1/messaging", self.messaging)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        sock = self._kept or bound_socket(0)
        self._kept = None
        sock.listen()
        await web.SockSite(self.runner, sock).start()
        self.port = sock.getsockname()[1]
        return self

    async def stop(self, keep_port: bool = False) -> None:
        """Stop answering; with `keep_port`, connections are refused and nobody else takes the port."""
        self.release()  # a held request would keep the server from shutting down
        await self.runner.cleanup()
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        if keep_port:
            self._kept = bound_socket(self.port)  # bound, not listening: a caller gets "connection refused"

    def release(self) -> None:
        """Answer every held request now, and answer later `timeout` and `slow` ones at once."""
        self._released.set()

    def bodies(self, to: str | None = None) -> list[str]:
        return [m["message"] for m in self.accepted if to is None or m["to"] == to]

    async def messaging(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.headers.get("apiKey") != self.api_key or form.get("username") != self.username:
            return web.Response(status=401, text="The supplied authentication is invalid")
        if not form.get("to") or not form.get("message"):
            return web.Response(status=400, text="Request is missing required form field 'to' or 'message'")
        wrong = self.premium_fault(form)
        if wrong:
            return web.Response(status=400, text=wrong)
        self.received.append(fields(form))
        behaviour = self.plan.pop(0) if self.plan else 101
        if behaviour == "500":
            return web.Response(status=500, text="Internal Server Error")
        if behaviour in ("timeout", "slow"):
            answer = self.answer(form, 101) if behaviour == "slow" else None  # "slow": sent now
            self.holding += 1
            try:
                await self._released.wait()
            finally:
                self.holding -= 1
            if answer is None:
                return web.Response(status=504, text="Gateway Timeout")
            return answer
        if behaviour == "html":
            return web.Response(text="<html><body>Please log in to continue</body></html>",
                                content_type="text/html")
        return self.answer(form, int(behaviour))

    def premium_fault(self, form) -> str | None:
        """Why a premium request is wrong, or None (also for a plain bulk message)."""
        premium = form.get("bulkSMSMode") == "0" or "linkId" in form or "keyword" in form
        if not premium:
            return None
        if form.get("bulkSMSMode") != "0":
            return "A premium message (keyword, linkId) needs bulkSMSMode 0"
        if form.get("from") != self.short_code:
            return f"Premium messages go from the short code {self.short_code}, not {form.get('from')!r}"
        if form.get("keyword") != self.keyword:
            return f"Unknown premium keyword {form.get('keyword')!r} for {self.short_code}"
        if not form.get("linkId"):
            return "An on-demand premium message needs the linkId of the message it answers"
        return None

    def answer(self, form, code: int) -> web.Response:
        """The JSON answer with status `code` for every recipient; the ones accepted are recorded."""
        record = fields(form)
        recipients = []
        for number in form["to"].split(","):
            ok = code in (100, 101, 102)
            recipients.append({"statusCode": code, "number": number, "status": STATUS[code],
                               "cost": "KES 0.8000" if ok else "0",
                               "messageId": f"ATXid_{uuid.uuid4().hex}" if ok else "None"})
            if ok:
                self.accepted.append({**record, "to": number, "id": recipients[-1]["messageId"]})
        total = sum(1 for r in recipients if r["statusCode"] in (100, 101, 102))
        answer = {"SMSMessageData": {"Message": f"Sent to {total}/{len(recipients)} Total Cost: KES 0.8000",
                                     "Recipients": recipients}}
        # Exactly "application/json": the SDK compares the header and returns raw text otherwise.
        return web.Response(body=json.dumps(answer).encode(), headers={"Content-Type": "application/json"})


def fields(form) -> dict:
    return {"to": form["to"], "message": form["message"], "from": form.get("from"),
            "bulkSMSMode": form.get("bulkSMSMode"), "keyword": form.get("keyword"), "linkId": form.get("linkId")}


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock
