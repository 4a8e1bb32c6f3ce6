"""`ferkeras predict --model export/NAME [INPUTS]...`: expressions of the faces in images,
videos or a webcam, with ONNX Runtime.

Imports neither TensorFlow nor Keras; onnxruntime, OpenCV and tqdm load inside the command.
`--json` writes one object per face per line, described by docs/predict_schema.json.
"""

from __future__ import annotations

import click

from ferkeras.deploy.faces import list_detectors

NO_FACE = "no face"


def face_records(source: str, frame: int | None, faces: list[dict]) -> list[dict]:
    """JSON records for one image or frame: one per face, or one `no face` record."""
    if not faces:
        return [{"source": source, "frame": frame, "box": None, "label": None, "score": None,
                 "scores": None, "box_source": None, "error": NO_FACE}]
    return [{"source": source, "frame": frame, **face, "error": None} for face in faces]


class _Report:
    """Writes records as JSON lines or a table, and annotated images; counts what was read."""

    def __init__(self, *, as_json: bool, annotate, source_width: int):
        self.as_json = as_json
        self.annotate = annotate
        self.width = min(max(source_width, 6), 60)
        self.read = 0
        self.faces = 0
        self.no_face = 0
        self.fallback = 0
        self.write_errors = 0
        self._names: set[str] = set()
        self._header = False

    def write(self, source: str, frame: int | None, image, faces: list[dict]) -> None:
        import json

        self.read += 1
        self.faces += len(faces)
        self.no_face += not faces
        self.fallback += any(f.get("box_source") == "whole_image_fallback" for f in faces)
        for record in face_records(source, frame, faces):
            if self.as_json:
                click.echo(json.dumps(record))
            else:
                self._write_row(record)
        if self.annotate is not None:
            self._save_annotated(source, frame, image, faces)

    def _write_row(self, record: dict) -> None:
        if not self._header:
            click.echo(f"{'source':<{self.width}}  {'frame':>6}  {'box':<22}  "
                       f"{'label':<10}  {'score':>5}")
            self._header = True
        frame = "-" if record["frame"] is None else str(record["frame"])
        source = record["source"]
        if len(source) > self.width:
            source = "..." + source[-(self.width - 3):]
        if record["error"]:
            box, label, score = "-", f"({record['error']})", ""
        else:
            box = "[" + ", ".join(str(v) for v in record["box"]) + "]"
            label, score = record["label"], f"{record['score']:.3f}"
        note = ("  (no face found: whole image used)"
                if record.get("box_source") == "whole_image_fallback" else "")
        click.echo(f"{source:<{self.width}}  {frame:>6}  {box:<22}  {label:<10}  {score:>5}"
                   f"{note}")

    def _save_annotated(self, source: str, frame: int | None, image, faces) -> None:
        import pathlib

        import cv2

        from ferkeras.deploy.faces import draw_faces

        if source.startswith("webcam:"):
            stem = "webcam" + source[len("webcam:"):]
        else:
            stem = pathlib.Path(source).stem
        name = stem if frame is None else f"{stem}_{frame:06d}"
        candidate, n = name, 1
        while candidate in self._names:
            candidate, n = f"{name}-{n}", n + 1
        self._names.add(candidate)
        path = self.annotate / f"{candidate}.jpg"
        try:
            written = cv2.imwrite(str(path), draw_faces(image, faces))
        except cv2.error:
            written = False
        if not written:
            self.write_errors += 1
            click.echo(f"error: {path}: cannot write the annotated image", err=True)


def _image_items(paths, report_errors):
    """(key, BGR image) for each readable file; one stderr line for each that is not."""
    from ferkeras.deploy.faces import read_image

    for path in paths:
        image = read_image(path)
        if image is None:
            report_errors(f"error: {path}: not an image")
            continue
        yield (str(path), None), image


def _frame_items(capture, name: str, *, every: int, max_frames: int):
    from ferkeras.deploy.faces import iter_frames

    for index, frame in iter_frames(capture, every=every, max_frames=max_frames):
        yield (name, index), frame


def _progress(items, *, total, unit: str, desc: str):
    import sys

    from tqdm import tqdm

    return tqdm(items, total=total, unit=unit, desc=desc, file=sys.stderr, disable=None,
                leave=False)


def prepare_annotate_dir(annotate: str):
    """The --annotate folder, created and proven writable; ClickException (one line) if not."""
    import pathlib
    import tempfile

    folder = pathlib.Path(annotate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ferkeras-write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise click.ClickException(f"--annotate {annotate}: cannot write annotated images "
                                   f"there ({reason})") from None
    return folder


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's final flush of a stdout that failed
    (full disk, closed pipe) prints no second error."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real fd behind stdout (tests)
        pass


@click.command("predict")
@click.argument("inputs", nargs=-1, type=str)
@click.option("--model", "model", envvar="FERKERAS_MODEL", default=None,
              type=click.Path(path_type=str),
              help="Export folder written by `ferkeras export` (or $FERKERAS_MODEL). Default: "
                   "the model shipped with ferkeras (FERPlus, 8 expressions, int8; see "
                   "ferkeras/pretrained/ferplus8/MODEL_CARD.md).")
@click.option("--webcam", type=click.IntRange(0, None), default=None,
              help="Read frames from this webcam index (needs OpenCV: ferkeras[webcam]).")
@click.option("--video", "videos", multiple=True, type=str,
              help="A video file to read frame by frame (repeatable).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1, None),
              help="Use every N-th frame of videos and the webcam.")
@click.option("--max-frames", default=0, show_default=True, type=click.IntRange(0, None),
              help="Stop each video/webcam after this many used frames (0: no limit).")
@click.option("--no-detect", is_flag=True,
              help="Images are face crops already (FER2013, AffectNet): the whole image is the "
                   "face.")
@click.option("--detector", default="blazeface+haar", show_default=True,
              type=click.Choice(list_detectors()),
              help="Face detector: BlazeFace (ships with ferkeras, onnxruntime), then the "
                   "staged Haar cascades (OpenCV) where it finds none; or one of them alone.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per face per line (docs/predict_schema.json).")
@click.option("--annotate", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Save images with boxes and labels drawn into this folder.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, None),
              help="Faces per model call.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, None),
              help="onnxruntime intra-op threads (0: one per core).")
@click.option("--margin", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Grow boxes without eye keypoints (Haar, --no-align) by this share of "
                   "their size on each side.")
@click.option("--align/--no-align", default=True, show_default=True,
              help="Rotate each face so its eyes are level and frame it as FER2013 does "
                   "(BlazeFace's eye keypoints); --no-align crops the box grown by --margin.")
def predict(inputs, model, webcam, videos, every, max_frames, no_detect, detector, as_json,
            annotate, batch_size, threads, margin, align) -> None:
    """Predict the expression of each face in INPUTS (image files, folders, globs, videos).

    Prints a table by default, or JSON lines with --json. A file that is not an image gets
    an `error:` line on stderr and the others go on; the exit code is non-zero when nothing
    could be read, when an annotated image could not be written, or when the output cannot
    be written (e.g. a full disk). Where no face is found in a small image (a tight crop),
    the whole image is used and the output says so.
    """
    import sys

    try:
        _predict(inputs, model, webcam, videos, every, max_frames, no_detect, detector,
                 as_json, annotate, batch_size, threads, margin, align)
        sys.stdout.flush()
    except OSError as err:  # stdout on a full disk or a closed pipe
        _silence_stdout()
        reason = err.strerror or type(err).__name__
        raise click.ClickException(f"cannot write the output ({reason})") from None


def _predict(inputs, model, webcam, videos, every, max_frames, no_detect, detector, as_json,
             annotate, batch_size, threads, margin, align) -> None:
    import os
    import pathlib

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from ferkeras.deploy import faces as F
    from ferkeras.deploy.inference import ModelFolderError, Predictor
    from ferkeras.pretrained import default_model

    if not inputs and not videos and webcam is None:
        raise click.UsageError("give image files, folders or globs, --video FILE or --webcam N")
    model_path, origin = default_model(model)
    if model_path is None:
        raise click.ClickException(origin)
    try:
        predictor = Predictor(model_path, threads=threads, batch_size=batch_size,
                              margin=margin, align=align,
                              detector=None if no_detect else F.build_detector(detector))
        paths = F.collect_inputs(inputs)
        if videos or webcam is not None or annotate or any(map(F.is_video, paths)):
            F.import_cv2("Video, webcam and --annotate")
    except (ModelFolderError, F.OpenCVMissingError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    video_paths = [str(p) for p in paths if F.is_video(p)] + list(videos)
    image_paths = [p for p in paths if not F.is_video(p)]
    annotate_dir = prepare_annotate_dir(annotate) if annotate else None
    width = max([len(str(p)) for p in image_paths + video_paths] + [len("webcam:0")])
    report = _Report(as_json=as_json, annotate=annotate_dir, source_width=width)
    errors = []

    def report_error(message: str) -> None:
        errors.append(message)
        click.echo(message, err=True)

    def run(items, **kwargs) -> None:
        for (source, frame), image, found in predictor.iter_predictions(
                items, detect=not no_detect, color="bgr", **kwargs):
            report.write(source, frame, image, found)

    if image_paths:
        if len(image_paths) > 1:
            image_paths = _progress(image_paths, total=len(image_paths), unit="img",
                                    desc="images")
        run(_image_items(image_paths, report_error))
    for video in video_paths:
        try:
            capture = F.open_capture(video)
        except F.FrameSourceError as err:
            report_error(f"error: {err}")
            continue
        total = F.count_frames(capture)
        total = -(-total // every) if total else None
        if total and max_frames:
            total = min(total, max_frames)
        frames = _frame_items(capture, video, every=every, max_frames=max_frames)
        read_before = report.read
        run(_progress(frames, total=total, unit="frame", desc=pathlib.Path(video).name))
        if report.read == read_before:
            report_error(f"error: {video}: no frame could be read")
    if webcam is not None:
        try:
            capture = F.open_capture(webcam)
        except F.FrameSourceError as err:
            raise click.ClickException(str(err)) from None
        try:
            run(_frame_items(capture, f"webcam:{webcam}", every=every, max_frames=max_frames),
                max_pending=1)
        except KeyboardInterrupt:
            capture.release()
    if report.fallback:
        click.echo(f"note: no face found in {report.fallback} small image(s); the whole image "
                   "was used as the face (box_source whole_image_fallback)", err=True)
    if report.no_face and not no_detect:
        click.echo(f"note: no face found in {report.no_face} image(s)/frame(s); if they are "
                   "face crops, pass --no-detect to use the whole image", err=True)
    if report.read == 0:
        raise click.ClickException(f"nothing could be read ({len(errors)} input(s) failed)")
    if report.write_errors:
        raise click.ClickException(f"{report.write_errors} annotated image(s) could not be "
                                   f"written to {annotate_dir}")


if __name__ == "__main__":
    predict()
