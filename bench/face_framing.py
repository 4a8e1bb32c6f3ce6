"""How FER2013 frames its faces, measured with the detector `ferkeras predict` uses (BlazeFace,
its default: averaged with its run on the mirrored frame).

    .venv/bin/python bench/face_framing.py [--data ../shared/data] [--rows 3000]   # ~1 min
    .venv/bin/python bench/face_framing.py --smoke     # seconds: drawn faces, no shared data

Each of `--rows` seeded FER2013 Training faces (48x48 grey) is upscaled (bicubic) and placed
in the middle of a 128x128 frame (BlazeFace's input size) with a border of `pad` x the face's
side on each side (edge pixels repeated, so the face keeps its context without filling the
frame, which the short-range detector needs), for each `--pads`. For every face found, the
box and the eye keypoints are mapped back to the 48-pixel crop and recorded as shares of its
side: box centre offset from the crop centre, box width and height, eye distance, the eyes'
midpoint, and the eyes' roll angle. The medians at the pad that finds most faces are the
framing `ferkeras.data.alignment.FER2013_FRAMING` matches; the other pads show how much the
figures depend on that choice.

For comparison, the same ratios relative to the BlazeFace box (eye distance / box width,
eye midpoint inside the box) are measured on the faces_in_the_wild photos, so that one can
see the detector places keypoints the same way on both.

Writes bench/results/face_framing.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import types

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
FRAME = 128


def place_in_frame(face: np.ndarray, *, pad: float) -> tuple[np.ndarray, float, float]:
    """(frame, offset, scale): a (FRAME, FRAME, 3) uint8 frame with `face` upscaled to
    FRAME / (1 + 2 pad) pixels in its middle, border replicated; frame = offset + scale x
    crop coordinates."""
    import cv2

    inner = round(FRAME / (1 + 2 * pad))
    big = cv2.resize(face, (inner, inner), interpolation=cv2.INTER_CUBIC)
    before = (FRAME - inner) // 2
    after = FRAME - inner - before
    frame = cv2.copyMakeBorder(big, before, after, before, after, cv2.BORDER_REPLICATE)
    return np.repeat(frame[..., None], 3, axis=-1), float(before), inner / face.shape[0]


def measure_crop(detector, face: np.ndarray, *, pad: float) -> dict | None:
    """Box and eye statistics of one face, as shares of the crop's side; None if not found."""
    from ferkeras.data.alignment import eye_angle

    frame, offset, scale = place_in_frame(face, pad=pad)
    found = detector.detect(frame, color="rgb")
    if not found:
        return None
    best = max(found, key=lambda d: d.score)
    side = face.shape[0]
    x, y, w, h = best.box
    to_crop = lambda v: (np.asarray(v, np.float64) - offset) / scale / side  # noqa: E731
    box = to_crop([x, y, x + w, y + h])
    eyes = to_crop(best.keypoints[:2])
    return {"box_cx": (box[0] + box[2]) / 2 - 0.5, "box_cy": (box[1] + box[3]) / 2 - 0.5,
            "box_w": box[2] - box[0], "box_h": box[3] - box[1],
            "eye_distance": float(np.hypot(*(eyes[1] - eyes[0]))),
            "eye_x": float(eyes[:, 0].mean()), "eye_y": float(eyes[:, 1].mean()),
            "roll_deg": eye_angle(eyes), "n_found": len(found)}


def box_relative(detection) -> dict:
    """Eye geometry relative to the detection's own box (detector consistency)."""
    x, y, w, h = detection.box
    eyes = np.asarray(detection.keypoints[:2], np.float64)
    return {"eye_distance_over_box_w": float(np.hypot(*(eyes[1] - eyes[0]))) / w,
            "eye_x_in_box": float((eyes[:, 0].mean() - x) / w),
            "eye_y_in_box": float((eyes[:, 1].mean() - y) / h), "box_h_over_w": h / w}


def summarize(rows: list[dict]) -> dict:
    """Median, quartiles, mean and sd of each key over `rows` ({} when there are none)."""
    out = {}
    if not rows:
        return out
    for key in rows[0]:
        v = np.asarray([r[key] for r in rows], np.float64)
        out[key] = {"median": round(float(np.median(v)), 4),
                    "q25": round(float(np.percentile(v, 25)), 4),
                    "q75": round(float(np.percentile(v, 75)), 4),
                    "mean": round(float(v.mean()), 4), "sd": round(float(v.std()), 4)}
    return out


def markdown(out: dict) -> str:
    best = out["chosen_pad"]
    lines = ["# FER2013's face framing, measured with BlazeFace", "",
             f"Command: `{out['command']}`. {out['n_rows']} seeded FER2013 Training faces "
             "(48x48), each upscaled into a 128x128 frame with a replicated border of `pad` x "
             "its side; BlazeFace (ferkeras's shipped ONNX) on each. Figures are shares of "
             "the 48-pixel crop's side (offsets from its centre; eye midpoint from its "
             "top-left corner).", "",
             "| pad | found | box centre dx | box centre dy | box w | box h | eye distance | "
             "eye mid x | eye mid y | roll (deg, median abs) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pad, r in out["by_pad"].items():
        s = r["stats"]
        lines.append(
            f"| {pad}{' (chosen)' if pad == best else ''} | {100 * r['found_rate']:.1f} % | "
            f"{s['box_cx']['median']:+.3f} | {s['box_cy']['median']:+.3f} | "
            f"{s['box_w']['median']:.3f} | {s['box_h']['median']:.3f} | "
            f"{s['eye_distance']['median']:.3f} | {s['eye_x']['median']:.3f} | "
            f"{s['eye_y']['median']:.3f} | {r['abs_roll_deg_median']:.1f} |")
    s = out["by_pad"][best]["stats"]
    f = out["framing"]
    lines += ["", f"Chosen pad {best} (most faces found). Quartiles there: eye distance "
              f"{s['eye_distance']['q25']:.3f}-{s['eye_distance']['q75']:.3f}, eye mid y "
              f"{s['eye_y']['q25']:.3f}-{s['eye_y']['q75']:.3f}, box w "
              f"{s['box_w']['q25']:.3f}-{s['box_w']['q75']:.3f}.", "",
              f"**Framing used** (`ferkeras.data.alignment.FER2013_FRAMING`): eye distance "
              f"{f['eye_distance']} of the crop's side, eyes' midpoint at x {f['eye_x']}, "
              f"y {f['eye_y']} (the crop's side = eye distance / {f['eye_distance']}). "
              f"FER2013's faces are level on average (signed roll median "
              f"{s['roll_deg']['median']:+.1f} deg, sd {s['roll_deg']['sd']:.1f}): the "
              "aligned crop levels the eyes.", "",
              "## Same detector, same ratios: FER2013 vs faces_in_the_wild", "",
              "Eye geometry relative to BlazeFace's own box (medians).", "",
              "| set | n | eye distance / box w | eye mid x in box | eye mid y in box | "
              "box h / w |", "|---|---|---|---|---|---|"]
    for name, block in out["box_relative"].items():
        b = block["stats"]
        lines.append(f"| {name} | {block['n']} | {b['eye_distance_over_box_w']['median']:.3f} "
                     f"| {b['eye_x_in_box']['median']:.3f} | {b['eye_y_in_box']['median']:.3f} "
                     f"| {b['box_h_over_w']['median']:.3f} |")
    wild = out["box_relative"].get("faces_in_the_wild")
    if wild:
        lines += ["", f"faces_in_the_wild: {wild['n']} of {wild['n_photos']} photos with a "
                  "BlazeFace face; the old predict crop (box grown by 10 % on each side, "
                  f"unrotated) put the eye distance at {wild['old_crop_eye_distance']:.3f} of "
                  f"the crop's side and the eyes' midpoint at y {wild['old_crop_eye_y']:.3f} "
                  f"(FER2013: {s['eye_distance']['median']:.3f}, {s['eye_y']['median']:.3f})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pads", default="0.25,0.5,0.75")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: drawn cartoon faces stand in for FER2013 and the photos")
    args = p.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import cv2

    from ferkeras.commands.ship_model import FER2013_FILE
    from ferkeras.data.alignment import FER2013_FRAMING
    from ferkeras.data.fer2013 import read_fer2013_csv
    from ferkeras.deploy.detection import BlazeFaceDetector

    data = pathlib.Path(args.data)
    if args.smoke:
        from inference import drawn_faces

        drawn = drawn_faces(8)
        faces48 = np.stack([cv2.resize(cv2.cvtColor(d[20:220, 60:260], cv2.COLOR_BGR2GRAY),
                                       (48, 48), interpolation=cv2.INTER_AREA) for d in drawn])
        table = types.SimpleNamespace(images=faces48.reshape(-1, 48 * 48))
        rows = np.arange(len(faces48))
        photos = drawn
    else:
        table = read_fer2013_csv(data / FER2013_FILE)
        train = np.flatnonzero(table.usage == "Training")
        rows = np.sort(np.random.default_rng(args.seed).choice(train, args.rows,
                                                                replace=False))
        paths = sorted((data / "faces_in_the_wild" / "images").glob("*.jpg"))
        photos = [cv2.imread(str(path)) for path in paths]
    detector = BlazeFaceDetector()
    pads = [float(v) for v in args.pads.split(",")]
    by_pad, found_rows = {}, {}
    for pad in pads:
        got = [measure_crop(detector, table.images[r].reshape(48, 48), pad=pad) for r in rows]
        ok = [g for g in got if g is not None]
        found_rows[pad] = [int(r) for r, g in zip(rows, got, strict=True) if g is not None]
        by_pad[str(pad)] = {"found_rate": round(len(ok) / len(rows), 4), "n_found": len(ok),
                            "multi_box_rate": round(sum(g["n_found"] > 1 for g in ok)
                                                    / max(1, len(ok)), 4),
                            "abs_roll_deg_median": round(float(np.median(
                                [abs(g["roll_deg"]) for g in ok])), 2) if ok else None,
                            "stats": summarize([{k: v for k, v in g.items() if k != "n_found"}
                                                for g in ok])}
        print(f"pad {pad}: found {len(ok)}/{len(rows)}", flush=True)
    chosen = max(by_pad, key=lambda k: by_pad[k]["found_rate"])
    # Box-relative geometry: FER2013 (chosen pad) vs real photos.
    fer_rel = []
    for r in found_rows[float(chosen)]:
        frame, _, _ = place_in_frame(table.images[r].reshape(48, 48), pad=float(chosen))
        fer_rel.append(box_relative(max(detector.detect(frame, color="rgb"),
                                        key=lambda d: d.score)))
    wild_rel, old_crop = [], []
    for photo in photos:
        found = detector.detect(photo, color="bgr")
        if found:
            best = max(found, key=lambda d: d.score)
            wild_rel.append(box_relative(best))
            x, y, w, h = best.box
            side = max(w, h) * 1.2
            eyes = np.asarray(best.keypoints[:2], np.float64)
            old_crop.append((float(np.hypot(*(eyes[1] - eyes[0]))) / side,
                             (eyes[:, 1].mean() - (y + h / 2 - side / 2)) / side))
    box_rel = {"FER2013 (pad " + chosen + ")": {"n": len(fer_rel),
                                                 "stats": summarize(fer_rel)}}
    if wild_rel:
        old = np.asarray(old_crop)
        box_rel["faces_in_the_wild"] = {
            "n": len(wild_rel), "n_photos": len(photos), "stats": summarize(wild_rel),
            "old_crop_eye_distance": round(float(np.median(old[:, 0])), 4),
            "old_crop_eye_y": round(float(np.median(old[:, 1])), 4)}
    stats = by_pad[chosen]["stats"]
    if not stats:
        stats = {k: {"median": None} for k in ("eye_distance", "eye_x", "eye_y")}
    out = {"n_rows": len(rows), "seed": args.seed, "pads": pads, "chosen_pad": chosen,
           "by_pad": by_pad, "box_relative": box_rel,
           "measured_framing": {"eye_distance": stats["eye_distance"]["median"],
                                "eye_x": stats["eye_x"]["median"],
                                "eye_y": stats["eye_y"]["median"]},
           "framing": {"eye_distance": FER2013_FRAMING.eye_distance,
                       "eye_x": FER2013_FRAMING.eye_x, "eye_y": FER2013_FRAMING.eye_y},
           "command": common.command_line(), "loadavg": list(os.getloadavg())}
    settings = {"rows": args.rows, "seed": args.seed, "pads": pads, "smoke": args.smoke}
    written = common.write_results("face_framing", out, markdown(out), settings)
    print(markdown(out))
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
