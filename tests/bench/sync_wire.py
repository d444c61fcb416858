"""Benchmark: bytes on the wire per submission when a gateway pushes a batch.

    .venv/bin/python tests/bench/sync_wire.py [--batch 100]

Makes a batch of realistic submissions (reports, voter registrations and
permits in the proportions a village sends, free text of typical length)
through the real store, pushes it to a real central backend on a loopback
port with the real sync client, and counts what crossed: the request body
(gzip'd JSON), the request headers, and the signed answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from flows import Engine
from gateway.config import data_root
from sync.central import CentralConfig, create_central_app
from sync.client import SyncClient
from sync.protocol import BATCH_PATH, BATCH_TYPE, encode_batch, sign_request
from sync.reference import new_reference
from sync.store import Store

PLACES = ["Dusun Kidul", "Sukamaju", "Jl. Merdeka", "Pasar Desa", "Dusun Krajan", "Balai Desa", "SD Negeri 2",
          "Masjid Al Ikhlas", "Pertigaan Cibeber", "Jembatan Ciliwung"]
WORDS = ("jalan lubang besar lampu mati sampah menumpuk air keruh bau motor jatuh sejak minggu lalu hari "
         "depan dekat belakang pasar sekolah masjid rumah warga tolong segera diperbaiki rusak parah banjir "
         "saluran tersumbat tiang miring kabel putus").split()
FIRST = ["Siti", "Ahmad", "Dewi", "Budi", "Sri", "Agus", "Nur", "Eko", "Rina", "Joko", "Wati", "Hendra"]
LAST = ["Aminah", "Santoso", "Lestari", "Hidayat", "Wahyuni", "Saputra", "Rahmawati", "Kurniawan"]


def answers(rng: random.Random) -> tuple[str, dict]:
    """A realistic submission's service and answers: reports, voter registrations and permits as a village
    sends them."""
    kind = rng.choices(["report", "voter", "permit"], [6, 2, 2])[0]
    if kind == "report":
        return kind, {"category": rng.choice(["road", "streetlight", "garbage", "water"]),
                      "location": f"{rng.choice(PLACES)} RT {rng.randrange(1, 20):02d}",
                      "description": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 12)))}
    if kind == "voter":
        return kind, {"nik": f"3201{rng.randrange(10**12):012d}", "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                      "birth_date": f"{rng.randrange(1950, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
                      "village": rng.choice(PLACES)}
    return kind, {"nik": f"3201{rng.randrange(10**12):012d}", "business": f"Warung {rng.choice(FIRST)}",
                  "kind": rng.choice(["shop", "food", "farm", "craft"]), "village": rng.choice(PLACES)}


def make_submissions(store: Store, count: int, rng: random.Random) -> None:
    for _ in range(count):
        kind, given = answers(rng)
        store.add_submission({"service": kind, "ref": new_reference("K7"), "answers": given, "language": "id",
                              "unique": {}}, phone=f"+62812{rng.randrange(10**8):08d}", channel="ussd")


async def push(items: list[dict], folder: Path) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen = {}

    @web.middleware
    async def measure(request, handler):
        seen["request_body"] = request.content_length  # read here, the body would be gone for the handler
        seen["request_headers"] = sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + len(
            f"{request.method} {request.path_qs} HTTP/1.1\r\n")
        response = await handler(request)
        seen["answer_body"] = len(response.body)
        return response

    root = data_root()
    forms = Engine.load(root / "menus", root / "locale", ["id", "en", "sw"], "id").forms("en")
    app = create_central_app(CentralConfig(folder / "central", "", forms, gateways={"bench": "secret"},
                                           prefixes={"bench": "K7"}))
    app.middlewares.append(measure)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            pushed = await SyncClient(f"http://127.0.0.1:{port}", "bench", "secret", http).push(items)
        assert all(r["result"] == "accepted" for r in pushed.results)
        # The same batch again (all duplicates: an answer of the same size), read as it crossed the wire.
        body = encode_batch("bench", items)
        headers = {**sign_request("bench", "secret", "POST", BATCH_PATH, body), "Content-Type": BATCH_TYPE,
                   "Accept-Encoding": "gzip"}
        async with aiohttp.ClientSession(auto_decompress=False) as raw_http:
            async with raw_http.post(f"http://127.0.0.1:{port}{BATCH_PATH}", data=body, headers=headers) as response:
                seen["answer_wire"] = len(await response.read())
                seen["answer_headers"] = sum(len(k) + len(v) + 4 for k, v in response.raw_headers) + 17
    finally:
        await runner.cleanup()
    return seen


def measure(batch: int) -> dict:
    """Bytes of one batch of `batch` submissions: JSON before gzip, the request body, the request's
    headers, the signed answer as JSON and as it crossed the wire, and everything both ways."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "gw")
        make_submissions(store, batch, random.Random(7))
        items = store.pending_submissions(batch)
        store.close()
        raw = len(json.dumps({"gateway": "bench", "items": items}, separators=(",", ":"),
                             ensure_ascii=False).encode())
        seen = asyncio.run(push(items, Path(folder)))
    return {"n": len(items), "raw": raw, "body": len(encode_batch("bench", items)), **seen,
            "wire": seen["request_body"] + seen["request_headers"] + seen["answer_wire"] + seen["answer_headers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    seen = measure(args.batch)
    n, raw, body, wire = seen["n"], seen["raw"], seen["body"], seen["wire"]
    print(f"batch of {n} submissions")
    print(f"  JSON before gzip      {raw:8d} bytes  {raw / n:7.1f} per submission")
    print(f"  request body (gzip)   {body:8d} bytes  {body / n:7.1f} per submission")
    print(f"  request headers       {seen['request_headers']:8d} bytes")
    print(f"  signed answer (JSON)  {seen['answer_body']:8d} bytes  {seen['answer_body'] / n:7.1f} per submission")
    print(f"  signed answer (wire)  {seen['answer_wire']:8d} bytes  {seen['answer_wire'] / n:7.1f} per submission "
          f"(gzip'd), headers {seen['answer_headers']} bytes")
    print(f"  total both ways       {wire:8d} bytes  {wire / n:7.1f} per submission (TCP/IP overhead not counted)")


if __name__ == "__main__":
    main()
