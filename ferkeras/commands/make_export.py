"""`make export`: export the latest finished run of the default recipe into export/.

Usage: python -m ferkeras.commands.make_export [--runs runs] [--prefix quickstart]
The export lands in export/<prefix>/ (git-ignored), replaced atomically.
"""

from __future__ import annotations

import pathlib
import sys

import click


@click.command()
@click.option("--runs", "runs_root", default="runs", show_default=True)
@click.option("--prefix", default="quickstart", show_default=True,
              help="Run-folder name prefix of the recipe to export.")
@click.option("--out-root", default="export", show_default=True)
def main(runs_root, prefix, out_root):
    from ferkeras.training.runs import latest_run

    run = latest_run(runs_root, prefix=prefix)
    if run is None:
        raise click.ClickException(
            f"no finished run named {prefix}* under {runs_root}/; run `make train` first.")
    out = pathlib.Path(out_root) / prefix
    click.echo(f"exporting {run} -> {out}")
    from ferkeras.commands.export_cmd import export

    sys.exit(export.main([str(run), "--out", str(out)], standalone_mode=False) or 0)


if __name__ == "__main__":
    main()
