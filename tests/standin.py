"""A loopback stand-in of Africa's Talking's messaging API, for the real SDK to talk to.

It answers `POST /version1/messaging` as the real one does: the API key in
the `apiKey` header, form fields `username`, `to`, `message`, `bulkSMSMode`,
optional `from`; a JSON answer with `Content-Type: application/json` exactly
(the SDK parses nothing else) listing each recipient's status code. A test
scripts what the next requests get: a 500; a `timeout` (no answer until
the client gave up, then a 504: the message was not sent); a `slow` success
(sent, but the answer comes after the client gave up, as when a link drops
mid-answer); a captive portal's HTML page; or a per-recipient status code.
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
    def __init__(self, api_key: str = "test-key", username: str = "kentongan"):
        self.api_key = api_key
        self.username = username
        self.received: list[dict] = []   # every request that reached us, answered or not
        self.accepted: list[dict] = []   # the messages we answered with a success code
        self.plan: list[object] = []     # the next requests get: "500", "timeout", "slow", "html", or a code
        self.hang_seconds = 5.0
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/version1"

    async def start(self, port: int | None = None) -> "AfricasTalkingStandIn":
        app = web.Application()
        app.router.add_post("/version1/messaging", self.messaging)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    def bodies(self, to: str | None = None) -> list[str]:
        return [m["message"] for m in self.accepted if to is None or m["to"] == to]

    async def messaging(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.headers.get("apiKey") != self.api_key or form.get("username") != self.username:
            return web.Response(status=401, text="The supplied authentication is invalid")
        if not form.get("to") or not form.get("message"):
            return web.Response(status=400, text="Request is missing required form field 'to' or 'message'")
        record = {"to": form["to"], "message": form["message"], "from": form.get("from"),
                  "bulkSMSMode": form.get("bulkSMSMode")}
        self.received.append(record)
        behaviour = self.plan.pop(0) if self.plan else 101
        if behaviour == "500":
            return web.Response(status=500, text="Internal Server Error")
        if behaviour in ("timeout", "slow"):
            await asyncio.sleep(self.hang_seconds)
            if behaviour == "timeout":
                return web.Response(status=504, text="Gateway Timeout")
            behaviour = 101
        if behaviour == "html":
            return web.Response(text="<html><body>Please log in to continue</body></html>",
                                content_type="text/html")
        code = int(behaviour)
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
