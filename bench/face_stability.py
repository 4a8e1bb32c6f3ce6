"""Does a face keep its label when the photo is mirrored or turned a little? Before/after
aligned crops, and with/without the flip averaging baked into the shipped model.

    .venv/bin/python bench/face_stability.py                         # ~2 min on 2 cores
    .venv/bin/python bench/face_stability.py --models before=DIR,after=DIR
    .venv/bin/python bench/face_stability.py --smoke     # seconds: tiny model, drawn faces

Photos: the 600 faces_in_the_wild photos (../shared/data/faces_in_the_wild, no labels; one
person each). Each photo is transformed (mirrored; turned by -10, -5, +5, +10 degrees about
its centre, edge pixels repeated), and run through the predict path as a user runs it:
`Predictor.detect_faces` (BlazeFace averaged with its run on the mirrored frame, Haar where
it finds nothing, the whole image for a small tight crop), `Predictor.crop` (old: the box
grown by 10 %; aligned: eyes levelled and FER2013-framed, `faces.crop_face`),
`Predictor.predict_crops`. When several faces are found
the largest box is the photo's face. Agreement: share of photos, among those with a face
in both the original and the transformed photo, whose top label is the same.

Writes bench/results/face_stability.{json,md}. `measure_stability` is also used by
bench/inference.py for `shipped.flip_agreement`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
TRANSFORMS = ("mirror", "rot-10", "rot-5", "rot+5", "rot+10")
CROPS = ("box", "aligned")


def transform(image: np.ndarray, name: str) -> np.ndarray:
    """The photo mirrored ('mirror') or turned by the signed degrees in 'rot+5' (counter-
    clockwise on screen for positive angles, as OpenCV), edge pixels repeated."""
    import cv2

    if name == "identity":
        return image
    if name == "mirror":
        return np.ascontiguousarray(image[:, ::-1])
    if not name.startswith("rot"):
        raise ValueError(f"unknown transform {name!r}. Valid: identity, {TRANSFORMS}")
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), float(name[3:]), 1.0)
    return cv2.warpAffine(image, turn, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def face_inputs(predictor, photos, names) -> dict:
    """{(transform, crop): (inputs (N, S, S, C) float32, found (N,) bool)} for every
    transform in `names` (plus 'identity') and crop in CROPS, one detection per photo."""
    size, channels = predictor.image_size, predictor.channels
    out = {}
    align = predictor.align
    for name in ("identity", *names):
        batches = {crop: np.zeros((len(photos), size, size, channels), np.float32)
                   for crop in CROPS}
        found = np.zeros(len(photos), bool)
        for i, photo in enumerate(photos):
            image = transform(photo, name)
            faces, source = predictor.detect_faces(image, color="bgr")
            if not faces:
                continue
            face = max(faces, key=lambda d: d.box[2] * d.box[3])
            found[i] = True
            for crop in CROPS:
                predictor.align = crop == "aligned"
                batches[crop][i] = predictor.prepare_crop(predictor.crop(image, face, source),
                                                          color="bgr")
            predictor.align = align
        for crop in CROPS:
            out[(name, crop)] = (batches[crop], found)
    return out


def agreement(inputs: dict, predictor, names) -> dict:
    """{crop: {transform: {agreement, n}}} of `predictor`'s top labels vs the original's."""
    labels = {key: predictor.predict_crops(x).argmax(1) for key, (x, _) in inputs.items()}
    out = {}
    for crop in CROPS:
        base, base_found = labels[("identity", crop)], inputs[("identity", crop)][1]
        row = {}
        for name in names:
            both = base_found & inputs[(name, crop)][1]
            same = labels[(name, crop)][both] == base[both]
            row[name] = {"agreement": round(float(same.mean()), 4), "n": int(both.sum())}
        rots = [row[n] for n in names if n.startswith("rot")]
        if rots:
            row["rotations_mean"] = {"agreement": round(float(np.mean(
                [r["agreement"] for r in rots])), 4), "n": min(r["n"] for r in rots)}
        row["n_with_face"] = int(base_found.sum())
        out[crop] = row
    return out


def read_photos(data: pathlib.Path, limit: int = 0) -> tuple[list, list]:
    import cv2

    paths = sorted((data / "faces_in_the_wild" / "images").glob("*.jpg"))
    if limit:
        paths = paths[:limit]
    return paths, [cv2.imread(str(p)) for p in paths]


def measure_stability(models: dict, photos, *, names=TRANSFORMS) -> dict:
    """{model name: agreement(...)}: every model scored on the same detections and crops
    (those of the first model's Predictor)."""
    first = next(iter(models.values()))
    inputs = face_inputs(first, photos, names)
    return {name: agreement(inputs, predictor, names) for name, predictor in models.items()}


def markdown(out: dict) -> str:
    lines = ["# Label stability on faces_in_the_wild: mirror and small rotations", "",
             f"Command: `{out['command']}`. {out['n_photos']} photos; a face found in "
             f"{out['n_with_face']} of them (default detector and tight-crop fallback). "
             "Agreement: share of photos whose top label is the same as on the original "
             "photo (among photos with a face in both).", "",
             "| model | crop | mirror | -10 deg | -5 deg | +5 deg | +10 deg | rotations mean |",
             "|---|---|---|---|---|---|---|---|"]
    for model, rows in out["agreement"].items():
        for crop, row in rows.items():
            cells = [f"{100 * row[n]['agreement']:.1f} %" if n in row else "-"
                     for n in (*TRANSFORMS, "rotations_mean")]
            lines.append(f"| {model} | {crop} | " + " | ".join(cells) + " |")
    lines += ["", "Models: " + "; ".join(f"`{k}`: {v}" for k, v in out["models"].items()) + ".",
              "Crops: `box` = the detector's box grown by 10 % on each side, unrotated (the "
              "predict path before aligned crops); `aligned` = eyes levelled, FER2013 "
              "framing (`ferkeras.deploy.faces.crop_face`, the default now). Where a face has "
              "no eye "
              "keypoints (Haar fallback) both crops are the box crop. Detectors: `single` = "
              "one BlazeFace pass (the detector before); `mirror` = averaged with its run on "
              "the mirrored frame (the default now).", ""]
    t = out.get("detector_timing")
    if t:
        lines += ["BlazeFace per photo, p50 over the first 100 photos x 3 interleaved rounds "
                  f"(load {out['loadavg'][0]:.1f} on 2 cores: upper bounds): " + "; ".join(
                      f"{k}-pass {v['wall_ms_p50']:.2f} ms wall, {v['cpu_ms_p50']:.2f} ms CPU"
                      for k, v in t.items()) + ".", ""]
    return "\n".join(lines) + "\n"


def time_detectors(detectors: dict, photos, *, rounds: int = 3) -> dict:
    """{name: {wall and process-CPU ms per call, p50}} of each detector on the photos,
    interleaved by round (other jobs share the machine)."""
    wall: dict = {k: [] for k in detectors}
    cpu: dict = {k: [] for k in detectors}
    for r in range(rounds):
        order = list(detectors.items())
        order = order[r % len(order):] + order[:r % len(order)]
        for name, detector in order:
            wall[name] += common.time_each(lambda im, d=detector: d.detect(im, color="bgr"),
                                           photos, warmup=2, repeats=len(photos),
                                           cpu=cpu[name])
    return {name: {"wall_ms_p50": common.summarize_ms(wall[name])["p50"],
                   "cpu_ms_p50": common.summarize_ms(cpu[name])["p50"], "calls": len(wall[name])}
            for name in detectors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--models", default=f"shipped={ROOT / 'ferkeras' / 'pretrained' / 'ferplus8'}",
                   help="name=export_dir,... (scored on the same detections and crops)")
    p.add_argument("--detectors", default="single,mirror",
                   help="BlazeFace passes to compare: single (one pass), mirror (averaged "
                        "with its run on the mirrored frame, the default detector)")
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: a tiny random model, drawn faces, no shared data")
    args = p.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from ferkeras.deploy.faces import build_detector
    from ferkeras.deploy.inference import Predictor

    if args.smoke:
        from inference import drawn_faces, tiny_export

        args.models = f"tiny={tiny_export(common.WORK / 'face_stability_smoke' / 'model')}"
        photos = drawn_faces(4)
    specs = dict(item.split("=", 1) for item in args.models.split(","))
    kinds = [k for k in args.detectors.split(",") if k]
    if not kinds or set(kinds) - {"single", "mirror"}:
        p.error(f"--detectors takes single and/or mirror. Received: {args.detectors!r}")
    if not args.smoke:
        _, photos = read_photos(pathlib.Path(args.data), args.limit)
    start = time.time()
    result, detectors = {}, {}
    for kind in kinds:
        detector = build_detector(mirror_average=kind == "mirror")
        detectors[kind] = detector.first
        models = {name: Predictor(path, detector=detector) for name, path in specs.items()}
        for name, agree in measure_stability(models, photos).items():
            result[f"{name}, {kind}-pass detector"] = agree
    first = next(iter(result.values()))
    timing = time_detectors(detectors, photos[:100])
    out = {"n_photos": len(photos), "n_with_face": first["aligned"]["n_with_face"],
           "transforms": list(TRANSFORMS), "agreement": result,
           "models": {k: _describe(Predictor(v)) for k, v in specs.items()},
           "detector_timing": timing, "wall_s": round(time.time() - start, 1),
           "command": common.command_line(), "loadavg": list(os.getloadavg())}
    settings = {"models": out["models"], "detectors": kinds, "limit": args.limit,
                "smoke": args.smoke}
    written = common.write_results("face_stability", out, markdown(out), settings)
    print(markdown(out))
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0


def _describe(predictor) -> str:
    meta = predictor.metadata
    flip = "flip-averaged" if meta.get("test_time_flip") else "no flip averaging"
    return (f"{meta.get('recipe', {}).get('name', '?')} ({flip}, onnx sha256 "
            f"{meta.get('files', {}).get('onnx_sha256', '?')[:12]})")


if __name__ == "__main__":
    sys.exit(main())
