"""A FastAPI/uvicorn endpoint that answers POST /v1/commands at once, without Kafka.

bench.write drives it with the same load generator as the real API to measure the latency
floor of the HTTP stack plus the client on this machine (phase 5, "HTTP floor").
It parses the JSON body and checks a bearer header is present, then returns a reply shaped
like an accepted command's; it decides nothing.

Usage: python -m bench.write.echo PORT
"""
import json
import sys
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"api": "ok"})


@app.post("/v1/commands")
async def command(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return JSONResponse({"status": "rejected", "code": "missing_token"}, status_code=401)
    aggregate_id = body.get("run_id") or str(uuid.uuid4())
    return JSONResponse({"command_id": str(uuid.uuid4()), "status": "accepted",
                         "replayed": False, "aggregate_id": aggregate_id, "aggregate_version": 1,
                         "events": [{"chain_seq": 1, "type": "echo", "aggregate_id": aggregate_id}]})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
