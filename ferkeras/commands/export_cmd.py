"""`ferkeras export RUN_DIR --out export/NAME`: SavedModel + ONNX + metadata, parity-checked."""

from __future__ import annotations

import click


def check_writable_parent(out: str) -> None:
    """Fail in one line, before any TensorFlow work, when `out`'s folder cannot be written."""
    import pathlib
    import tempfile

    parent = pathlib.Path(out).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".ferkeras-write-test-"):
            pass
    except OSError as err:
        raise click.ClickException(f"--out {out}: cannot write there "
                                   f"({err.strerror or type(err).__name__})") from None


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str),
              help="Export folder to write (replaced only after a successful export).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(13, None),
              help="ONNX opset.")
@click.option("--weights", default="best", show_default=True,
              type=click.Choice(["best", "last"]), help="Checkpoint of the run to export.")
@click.option("--parity-limit", default=256, show_default=True, type=click.IntRange(1, None),
              help="Validation images used for the ONNX Runtime vs Keras parity check.")
def export(run_dir: str, out: str, opset: int, weights: str, parity_limit: int) -> None:
    """Export a training run to SavedModel + ONNX, checked for parity on validation images."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from ferkeras.deploy.export import ExportError, export_run
    from ferkeras.training.recipe import RecipeError

    check_writable_parent(out)
    try:
        meta = export_run(run_dir, out, opset=opset, weights=weights, parity_limit=parity_limit)
    except (ExportError, RecipeError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # the disk filled up or the folder became read-only meanwhile
        raise click.ClickException(f"--out {out}: cannot write the export "
                                   f"({err.strerror or err})") from None
    parity = meta["parity"]
    click.echo(f"exported {run_dir} ({weights}) -> {out}: {len(meta['class_names'])} classes, "
               f"input {meta['image_size']}x{meta['image_size']}x{meta['channels']}, "
               f"parity max|diff| {parity['max_abs_diff']:.2g} on {parity['images']} images")


if __name__ == "__main__":
    export()
