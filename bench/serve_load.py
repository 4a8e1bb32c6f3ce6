"""Benchmark: `ferkeras serve` under load and under a flood of bad input, on loopback.

Commands (from the repository root; the shared data is read in place, never copied):

    .venv/bin/python bench/serve_load.py            # ~2 min: 64 faces_in_the_wild photos
    .venv/bin/python bench/serve_load.py --smoke    # ~20 s: drawn faces, no shared data

Protocol
- Images: the first `--images` photos of ../shared/data/faces_in_the_wild/images (JPEG as
  stored) in which the in-process predictor finds exactly one face; the smoke mode draws
  cartoon faces (PNG). Each image's in-process answer (label and box) is the reference.
- In-process: one `Predictor` (the shipped model, default detector) in this process, one
  calling thread, `decode_image` (the server's own decoder) + `predict`, cycling over the
  images. Throughput and latency per image.
- HTTP: `ferkeras serve` (1 worker, the same model and detector, no access log) in a child
  process; for each of `--clients` (1, 8, 32) that many clients, each on its own keep-alive
  connection (asyncio, raw HTTP/1.1), POST the images (raw body) back to back for
  `--duration` s. Latency is send-to-last-byte. An error is a transport failure or any
  status but 200; a mismatch is a 200 whose label or box differs from the reference.
- Keys: `http_over_inprocess` = HTTP throughput at 8 clients / in-process throughput (the
  same images, the same run): the two alternate in `--rounds` rounds of `--duration`/rounds
  s each (in-process, then HTTP), so that both see the same drift in other jobs' load; the
  pooled ratio is the key, each round's is recorded. `errors` over all levels;
  `rss_growth` = the server's RSS after the last level / after warm-up - 1 (warm-up: 5 s
  at the highest concurrency).
- Flood: `--flood` requests, half good and half bad (empty body, unknown type, no type,
  not an image, truncated JPEG, corrupt PNG, PNG bomb, pixels over the limit, body declared
  too long, chunked body too long), shuffled, 8 at a time, each on a new connection. Every
  good one must be answered 200 with its reference answer, every bad one with its 4xx, and
  the server must answer /healthz and a good image at the end. (Slow bodies, 408, are left
  out: each costs the timeout; tests/test_serve_process.py covers them.)
- Machine: other jobs share this 2-core machine; the CPU share they used just before the
  run (from /proc/stat) and the load average at start and end are recorded next to the
  figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pathlib
import random
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; stdlib only)

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data"
TARGETS = {"http_over_inprocess": 0.8, "errors": 0, "rss_growth": 0.10}
RATIO_CLIENTS = 8


# ----------------------------------------------------------------------------- inputs
def load_images(args) -> list[tuple[str, bytes, str]]:
    """[(name, bytes, content type)] of the candidate images."""
    if args.smoke:
        import numpy as np
        from inference import drawn_faces  # bench/inference.py: the smoke mode's photos
        from PIL import Image

        out = []
        for i, bgr in enumerate(drawn_faces(args.images)):
            frame = np.zeros((360, 480, 3), np.uint8)
            frame[60:300, 80:400] = bgr[..., ::-1]
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "PNG")
            out.append((f"drawn_{i}.png", buffer.getvalue(), "image/png"))
        return out
    folder = pathlib.Path(args.data) / "faces_in_the_wild" / "images"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        sys.exit(f"error: no photos in {folder} (pass --data, or --smoke)")
    return [(p.name, p.read_bytes(), "image/jpeg") for p in paths[: args.images * 2]]


def one_face_references(service, images, limit: int):
    """Images with exactly one face found in-process, and each one's (label, box)."""
    from ferkeras.serve.limits import decode_image

    kept, refs = [], []
    for name, data, kind in images:
        faces = service.predict([decode_image(data, max_pixels=10**8)], detect=True,
                                deadline=None)[0]
        if len(faces) == 1:
            kept.append((name, data, kind))
            refs.append((faces[0]["label"], faces[0]["box"]))
        if len(kept) == limit:
            break
    return kept, refs


def bad_requests(good_png: bytes, max_pixels: int, max_body: int) -> dict:
    """name -> (raw request head + body bytes, expected status).

    good_png: a PNG photo with a face; its truncated and corrupted copies are bad inputs.
    """
    from PIL import Image

    def head(kind, length, extra=""):
        kind_line = f"Content-Type: {kind}\r\n" if kind else ""
        return (f"POST /v1/predict HTTP/1.1\r\nHost: bench\r\n{kind_line}"
                f"Content-Length: {length}\r\nConnection: close\r\n{extra}\r\n").encode()

    def raw(kind, body):
        return head(kind, len(body)) + body

    def chunk(n):
        return b"\0" * n

    buffer = io.BytesIO()
    side = int(max_pixels ** 0.5) + 8
    Image.new("L", (side, side)).save(buffer, "PNG")
    over_pixels = buffer.getvalue()
    corrupt = bytearray(good_png)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 32] = b"\xff" * 32
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)

    def png_chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    chunked = (b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + (b"8000\r\n" + chunk(0x8000) + b"\r\n") * (max_body // 0x8000 + 2))
    return {
        "empty_body": (raw("image/jpeg", b""), 400),
        "unknown_type": (raw("text/plain", good_png), 415),
        "no_type": (raw("", good_png), 415),
        "not_an_image": (raw("image/jpeg", b"<html>" + b"x" * 2000), 422),
        "truncated": (raw("image/png", good_png[: len(good_png) // 3]), 422),
        "corrupt": (raw("image/png", bytes(corrupt)), 422),
        "png_bomb": (raw("image/png", bomb), 422),
        "over_pixel_limit": (raw("image/png", over_pixels), 422),
        "declared_too_long": (head("image/jpeg", max_body * 10), 413),
        "chunked_too_long": (chunked, 413),
    }


def to_png(data: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the server
class Server:
    """`ferkeras serve` in a child process on a free loopback port."""

    def __init__(self, args, work: pathlib.Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = work / "server.log"
        command = [sys.executable, "-m", "ferkeras.cli", "serve", "--port", str(self.port),
                   "--workers", "1", "--no-access-log", "--log-level", "warning",
                   "--max-body-mb", str(args.max_body_mb), "--max-pixels",
                   str(args.max_pixels), "--timeout", "30", "--max-connections", "512"]
        if args.model:
            command += ["--model", args.model]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while not self.ok("/readyz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit("error: ferkeras serve did not start:\n" + self.log.read_text())
            time.sleep(0.2)

    def ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def rss_bytes(self) -> int:
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----------------------------------------------------------------------------- the client
async def read_response(reader) -> tuple[int, dict, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before an answer")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


def check_answer(status: int, body: bytes, ref) -> str:
    """'ok', 'error' (not a 200 with one record) or 'mismatch' (not the reference)."""
    if status != 200:
        return "error"
    try:
        (record,) = json.loads(body)["records"]
    except (ValueError, KeyError, TypeError):
        return "error"
    return "ok" if (record["label"], record["box"]) == tuple(ref) else "mismatch"


async def client(port: int, requests, refs, start: int, stop_at: float, out: dict):
    """One client: its own keep-alive connection, requests back to back until stop_at."""
    reader = writer = None
    i = start
    while time.monotonic() < stop_at:
        index = i % len(requests)
        i += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            begin = time.perf_counter()
            writer.write(requests[index])
            await writer.drain()
            status, headers, body = await read_response(reader)
            out["latency"].append(time.perf_counter() - begin)
            out[check_answer(status, body, refs[index])] += 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            out["error"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run_level(port: int, requests, refs, clients: int, duration: float) -> dict:
    """`clients` clients for `duration` s: {latency: [s], ok, error, mismatch, wall}."""
    out = {"latency": [], "ok": 0, "error": 0, "mismatch": 0}
    begin = time.monotonic()
    stop_at = begin + duration
    step = max(1, len(requests) // clients)
    await asyncio.gather(*(client(port, requests, refs, k * step, stop_at, out)
                           for k in range(clients)))
    out["wall"] = time.monotonic() - begin
    return out


def level_summary(parts: list[dict], clients: int) -> dict:
    """One table row from one or more run_level results (pooled)."""
    latencies = [s for part in parts for s in part["latency"]]
    return summarize(latencies, sum(part["wall"] for part in parts)) | {
        "clients": clients, "errors": sum(part["error"] for part in parts),
        "mismatches": sum(part["mismatch"] for part in parts)}


def summarize(latencies, wall: float) -> dict:
    if not latencies:
        return {"requests": 0, "throughput_per_s": 0.0, "p50_ms": None, "p99_ms": None,
                "wall_s": round(wall, 2)}
    ms = [s * 1e3 for s in latencies]
    return {"requests": len(ms), "throughput_per_s": round(len(ms) / wall, 2),
            "p50_ms": round(common.percentile(ms, 50), 2),
            "p99_ms": round(common.percentile(ms, 99), 2), "wall_s": round(wall, 2)}


async def one_shot(port: int, payload: bytes) -> int | None:
    """Status of one request on a new connection (the answer is read even when the server
    answers before the whole payload is sent); None when no answer came."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        try:
            writer.write(payload)
            await writer.drain()
        except OSError:
            pass
        status, _, body = await asyncio.wait_for(read_response(reader), 30)
        return status, body
    except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()


async def flood(port: int, good, refs, bad: dict, total: int, seed: int = 0) -> dict:
    """`total` requests, half good, half bad (cycling over `bad`), 8 at a time."""
    rng = random.Random(seed)
    names = sorted(bad)
    jobs = [("good", i % len(good)) for i in range(total // 2)]
    jobs += [("bad", names[i % len(names)]) for i in range(total - total // 2)]
    rng.shuffle(jobs)
    result = {"good": 0, "good_right": 0, "bad": 0, "bad_right": 0, "wrong": []}
    semaphore = asyncio.Semaphore(8)

    async def one(kind, key):
        async with semaphore:
            if kind == "good":
                payload = good[key].replace(b"Connection: keep-alive", b"Connection: close")
                answer = await one_shot(port, payload)
                right = answer is not None and check_answer(*answer, refs[key]) == "ok"
            else:
                payload, expected = bad[key]
                answer = await one_shot(port, payload)
                right = answer is not None and answer[0] == expected and \
                    _error_status(answer[1]) == expected
            result[kind] += 1
            result[f"{kind}_right"] += right
            if not right:
                result["wrong"].append([kind, str(key), None if answer is None else answer[0]])

    await asyncio.gather(*(one(kind, key) for kind, key in jobs))
    alive = await one_shot(port, good[0].replace(b"Connection: keep-alive",
                                                 b"Connection: close"))
    result["alive_at_end"] = alive is not None and check_answer(*alive, refs[0]) == "ok"
    result["bad_kinds"] = names
    return result


def _error_status(body: bytes):
    try:
        return json.loads(body)["error"]["status"]
    except (ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------- in-process
def run_inprocess(service, images, duration: float) -> tuple[list[float], float]:
    """(latencies, wall seconds) of decode + predict, one image at a time, for `duration`."""
    from ferkeras.serve.limits import decode_image

    latencies, i = [], 0
    begin = time.monotonic()
    while time.monotonic() - begin < duration:
        _, data, _ = images[i % len(images)]
        i += 1
        start = time.perf_counter()
        rgb = decode_image(data, max_pixels=10**8)
        service.predict([rgb], detect=True, deadline=None)
        latencies.append(time.perf_counter() - start)
    return latencies, time.monotonic() - begin


def cpu_busy_share(seconds: float = 2.0) -> float:
    """Share of all cores busy over `seconds` (from /proc/stat), before our run starts."""
    def sample():
        fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0]
                  .split()[1:]]
        idle = fields[3] + fields[4]
        return idle, sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


# ----------------------------------------------------------------------------- report
def markdown(out: dict) -> str:
    keys, t = out["keys"], TARGETS
    m = out["machine"]
    lines = [
        "# `ferkeras serve` under load (loopback)",
        "",
        "Command: see the provenance line at the end. "
        f"Model `{out['model']}`, detector blazeface+haar, {out['images']} "
        f"{out['image_source']} images with one face each, "
        f"{out['settings']['duration']:g} s per level, 1 server worker.",
        "",
        f"Machine: {m['cpu_count']} cores; other jobs kept "
        f"{m['other_cpu_busy_share_before'] * 100:.0f} % of the CPU busy just before the run "
        f"(load average {m['start']['loadavg_1_5_15']} at start, "
        f"{m['end']['loadavg_1_5_15']} at end): "
        + ("**the machine was shared with another CPU job**, so every figure is lower "
           "than on an idle machine." if m["shared"] else "the machine was otherwise idle."),
        "",
        "| key | value | target | met |",
        "|---|---|---|---|",
        f"| http_over_inprocess (throughput at {RATIO_CLIENTS} clients / in-process) | "
        f"{keys['http_over_inprocess']:.3f} | >= {t['http_over_inprocess']} | "
        f"{'yes' if keys['http_over_inprocess'] >= t['http_over_inprocess'] else 'no'} |",
        f"| errors (all levels) | {keys['errors']} | {t['errors']} | "
        f"{'yes' if keys['errors'] == 0 else 'no'} |",
        f"| rss_growth (after the run / after warm-up - 1) | {keys['rss_growth']:+.4f} | "
        f"<= {t['rss_growth']} | {'yes' if keys['rss_growth'] <= t['rss_growth'] else 'no'} |",
        "",
        "| path | clients | requests | images/s | p50 ms | p99 ms | errors | mismatches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ip = out["inprocess"]
    lines.append(f"| in-process Predictor (decode + predict) | 1 caller | {ip['requests']} | "
                 f"{ip['throughput_per_s']} | {ip['p50_ms']} | {ip['p99_ms']} | - | - |")
    for level in out["http"]:
        lines.append(f"| HTTP POST /v1/predict | {level['clients']} | {level['requests']} | "
                     f"{level['throughput_per_s']} | {level['p50_ms']} | {level['p99_ms']} | "
                     f"{level['errors']} | {level['mismatches']} |")
    lines += [
        "",
        f"The ratio's rounds (in-process, then HTTP with {RATIO_CLIENTS} clients, alternating): "
        f"in-process {ip['throughput_per_round']} images/s, HTTP "
        f"{next(x for x in out['http'] if x['clients'] == RATIO_CLIENTS)['throughput_per_round']}"
        f" images/s; ratio per round {out['http_over_inprocess_per_round']}.",
    ]
    f = out["flood"]
    lines += [
        "",
        f"RSS of the server: {out['rss']['after_warmup_mb']} MB after warm-up, "
        f"{out['rss']['after_run_mb']} MB after the load levels, "
        f"{out['rss']['after_flood_mb']} MB after the flood.",
        "",
        f"Flood: {f['good'] + f['bad']} requests, 8 at a time, shuffled: {f['good']} good "
        f"({f['good_right']} answered 200 with the reference answer), {f['bad']} bad "
        f"({f['bad_right']} answered with their 4xx), of {len(f['bad_kinds'])} kinds "
        f"({', '.join(f['bad_kinds'])}). Server answering a good image at the end: "
        f"{'yes' if f['alive_at_end'] else 'NO'}."
        + (f" Wrong answers: {f['wrong'][:10]}." if f["wrong"] else ""),
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA), help="folder holding faces_in_the_wild/")
    p.add_argument("--model", default=None, help="export folder (default: shipped model)")
    p.add_argument("--images", type=int, default=64, help="images with one face to use")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    p.add_argument("--clients", default="1,8,32", help="concurrency levels")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating in-process / 8-client rounds (--duration split over them)")
    p.add_argument("--flood", type=int, default=400, help="requests in the flood")
    p.add_argument("--max-body-mb", type=float, default=1.0)
    p.add_argument("--max-pixels", type=int, default=4_000_000)
    p.add_argument("--smoke", action="store_true",
                   help="seconds: drawn faces, no shared data, 1 s levels, a small flood")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if args.smoke:
        args.images, args.duration, args.flood, args.rounds = 6, 1.0, 40, 2
    settings = dict(vars(args))
    levels = [int(c) for c in args.clients.split(",")]
    if RATIO_CLIENTS not in levels:
        sys.exit(f"error: --clients must include {RATIO_CLIENTS} (the ratio's level)")
    machine = {"other_cpu_busy_share_before": cpu_busy_share(),
               "start": common.machine_state(), "cpu_count": os.cpu_count()}
    machine["shared"] = (machine["other_cpu_busy_share_before"] > 0.15
                         or machine["start"]["loadavg_1_5_15"][0] > 0.5)
    from ferkeras.serve.service import ModelService

    service = ModelService.load(args.model, detector="blazeface+haar")
    images, refs = one_face_references(service, load_images(args), args.images)
    if not images:
        sys.exit("error: no image with exactly one face")
    print(f"{len(images)} images with one face", flush=True)
    requests = [(f"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: {kind}\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n").encode()
                + data for _, data, kind in images]
    good_png = to_png(images[0][1])
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferkeras-serve-load-"))
    server = Server(args, work)
    chunk = args.duration / args.rounds
    try:
        # Warm-up at the highest concurrency, so that thread pools, connection buffers and
        # the allocator's arenas have grown before the RSS baseline is read.
        asyncio.run(run_level(server.port, requests, refs, max(levels),
                              min(5.0, args.duration)))
        rss_warm = server.rss_bytes()
        # The ratio's two sides alternate in short rounds, so that both see the same drift
        # in the other jobs' load.
        ip_parts, ratio_parts = [], []
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: in-process, then HTTP with "
                  f"{RATIO_CLIENTS} clients, {chunk:g} s each", flush=True)
            ip_parts.append(run_inprocess(service, images, chunk))
            ratio_parts.append(asyncio.run(run_level(server.port, requests, refs,
                                                     RATIO_CLIENTS, chunk)))
        http = []
        for clients in levels:
            if clients == RATIO_CLIENTS:
                http.append(level_summary(ratio_parts, clients))
                continue
            print(f"HTTP, {clients} client(s), {args.duration:g} s", flush=True)
            http.append(level_summary([asyncio.run(run_level(
                server.port, requests, refs, clients, args.duration))], clients))
        rss_run = server.rss_bytes()
        bad = bad_requests(good_png, args.max_pixels, int(args.max_body_mb * 1024 * 1024))
        print(f"flood: {args.flood} requests", flush=True)
        flooded = asyncio.run(flood(server.port, requests, refs, bad, args.flood))
        flooded["alive_at_end"] = flooded["alive_at_end"] and server.ok("/healthz")
        rss_flood = server.rss_bytes()
        log_text = server.log.read_text()
    finally:
        server.stop()
    machine["end"] = common.machine_state()
    inprocess = summarize([s for lat, _ in ip_parts for s in lat],
                          sum(wall for _, wall in ip_parts)) | {
        "throughput_per_round": [round(len(lat) / wall, 2) for lat, wall in ip_parts]}
    at_ratio = next(level for level in http if level["clients"] == RATIO_CLIENTS)
    at_ratio["throughput_per_round"] = [round(len(p["latency"]) / p["wall"], 2)
                                        for p in ratio_parts]
    ratio_rounds = [round(h / i, 3) if i else None for h, i in zip(
        at_ratio["throughput_per_round"], inprocess["throughput_per_round"], strict=True)]
    keys = {"http_over_inprocess": round(at_ratio["throughput_per_s"]
                                         / inprocess["throughput_per_s"], 4),
            "errors": sum(level["errors"] for level in http),
            "rss_growth": round(rss_run / rss_warm - 1, 4)}
    out = {
        "keys": keys, "targets": TARGETS,
        "met": {"http_over_inprocess": keys["http_over_inprocess"]
                >= TARGETS["http_over_inprocess"],
                "errors": keys["errors"] == 0, "rss_growth": keys["rss_growth"]
                <= TARGETS["rss_growth"],
                "flood": flooded["good_right"] == flooded["good"]
                and flooded["bad_right"] == flooded["bad"] and flooded["alive_at_end"]},
        "mismatches": sum(level["mismatches"] for level in http),
        "http_over_inprocess_per_round": ratio_rounds,
        "inprocess": inprocess, "http": http, "flood": flooded,
        "rss": {"after_warmup_mb": round(rss_warm / 2**20, 1),
                "after_run_mb": round(rss_run / 2**20, 1),
                "after_flood_mb": round(rss_flood / 2**20, 1)},
        "server_log_tracebacks": log_text.count("Traceback"),
        "images": len(images),
        "image_source": "drawn (smoke)" if args.smoke else "faces_in_the_wild",
        "model": str(args.model or "shipped ferplus8"),
        "machine": machine, "settings": settings,
        "versions": common.package_versions(["starlette", "uvicorn", "onnxruntime",
                                             "python-multipart", "pillow"]),
    }
    json_path, md_path = common.write_results("serve_load", out, markdown(out), settings,
                                              code_files=[__file__])
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
