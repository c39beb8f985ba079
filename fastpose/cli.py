"""The `fastpose` command: parse arguments, call one function of a stage module, print. No logic of its own.

Every subcommand has --help with an example. A `UserError` (bad data, config typo, ...) is printed as one paragraph
and exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fastpose.errors import UserError

app = typer.Typer(help="fastpose: train DeeperCut-style keypoint detectors fast. Run `fastpose COMMAND --help`.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
convert_app = typer.Typer(help="Convert a dataset into fastpose HDF5 shards.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configs.", no_args_is_help=True)
app.add_typer(convert_app, name="convert")
app.add_typer(config_app, name="config")
out = Console()

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set key=value (YAML "
                                                  "value, repeatable), e.g. --set 'multi_step=[[0.005, 100]]'.")]
SplitOpt = Annotated[str | None, typer.Option(help="Held-out split, e.g. train=0.9,test=0.1 (default: all train).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split.")]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes (default: the CPU count).")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad entries (listed in the manifest) instead of "
                                       "stopping.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
ShardOpt = Annotated[int, typer.Option(help="Samples per shard file.")]
ReencodeOpt = Annotated[int | None, typer.Option("--reencode-jpeg", help="Re-encode images as JPEG of this quality "
                                                 "(smaller, faster to decode).")]


@config_app.command("show")
def config_show(config: Path, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled, overrides applied, checked).

    Example: fastpose config show configs/mpii.yaml --set batch_size=16
    """
    from fastpose.config import load

    out.print(load(config, set_).to_yaml(), end="", highlight=False)


@app.command()
def info(dataset: Path, verify: Annotated[bool, typer.Option("--verify", help="Check the shards' sha256.")] = False,
         json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Summarise a shards folder: samples, persons, joints per sample, image sizes per split.

    Example: fastpose info data/demo --verify
    """
    from fastpose import shards

    summary = shards.summary(dataset)
    if verify:
        problems = shards.verify(dataset)
        summary["verified"] = not problems
        if problems:
            raise UserError(f"{dataset}: checksum verification failed: " + "; ".join(problems)
                            + ". Convert the dataset again.")
    if json_:
        print(json.dumps(summary, indent=1))
        return
    table = Table(title=f"{dataset}  ({summary['num_joints']} joints)")
    for col in ("split", "samples", "persons", "joints present", "joints/sample", "height", "width", "shards"):
        table.add_column(col, justify="right")
    for name, s in summary["splits"].items():
        table.add_row(name, str(s["samples"]), str(s["persons"]), str(s["joints_present"]),
                      f"{s['joints_per_sample']:.1f}", "{}-{}".format(*s["image_height"]),
                      "{}-{}".format(*s["image_width"]), str(s["shards"]))
    out.print(table)
    out.print("joints: " + ", ".join(summary["joint_names"]))
    if summary["skipped"]:
        out.print(f"[yellow]{summary['skipped']} source entries were skipped (see manifest.json)[/yellow]")
    if verify:
        out.print("[green]checksums OK[/green]")


def main() -> None:
    try:
        app()
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
