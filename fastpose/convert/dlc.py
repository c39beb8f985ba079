"""`fastpose convert dlc`: a DeepLabCut project's labelled frames into shards.

Reads `PROJECT/config.yaml` (bodyparts, skeleton) and every `PROJECT/labeled-data/*/CollectedData_*.csv`: three header
rows (scorer / bodyparts / coords; multi-animal projects add an `individuals` row, each individual becoming a person),
then one row per frame: the image path relative to the project (one column, or the three columns labeled-data / video /
file of newer DeepLabCut) and x, y per body part; an empty cell is an absent joint. DeepLabCut's pixel coordinates
already put pixel centres at integer coordinates (the project's convention), so they are used as they are.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml

from fastpose.convert.common import Entry, Reencode, assign_splits, convert_entries, load_image_entry, parse_split
from fastpose.errors import UserError
from fastpose.shards import ShardWriter


def read_project(project: str | Path) -> tuple[list[str], list[list[int]], list[Entry]]:
    """(body part names, skeleton as id pairs, entries) of a DeepLabCut project."""
    project = Path(project)
    cfg_path = project / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{project} is not a DeepLabCut project: {cfg_path} is missing. Pass the project folder (the "
                        f"one holding config.yaml and labeled-data/).")
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not readable YAML ({type(e).__name__}: {str(e).splitlines()[0]}). Fix it, "
                        f"or let DeepLabCut write it again.") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path}: the top level must be a mapping (bodyparts: [...], skeleton: [...]), got "
                        f"{type(cfg).__name__}. Pass the DeepLabCut project's own config.yaml.")
    names = []
    for key in ("multianimalbodyparts" if cfg.get("multianimalbodyparts") else "bodyparts", "uniquebodyparts"):
        value = cfg.get(key) or []
        if not (isinstance(value, list) and all(isinstance(n, str) and n for n in value)):
            raise UserError(f"{cfg_path}: {key} is {str(value)[:80]}, not a list of body part names. Write it as "
                            f"{key}: [name1, name2, ...].")
        names += value
    if not names:
        raise UserError(f"{cfg_path}: no `bodyparts` list. Add the body part names to the DeepLabCut config.")
    if len(set(names)) != len(names):
        raise UserError(f"{cfg_path}: body part names repeat ({names}); each must be listed once.")
    ids = {n: k for k, n in enumerate(names)}
    edges = cfg.get("skeleton") or []
    # Edges naming unknown parts are dropped (DeepLabCut keeps stale ones); a skeleton that is no list of pairs is
    # an error.
    if not (isinstance(edges, list) and all(isinstance(e, list) and len(e) == 2 for e in edges)):
        raise UserError(f"{cfg_path}: skeleton is {str(edges)[:80]}, not a list of [part, part] pairs.")
    skeleton = [[ids[a], ids[b]] for a, b in edges if isinstance(a, str) and isinstance(b, str) and a in ids
                and b in ids]
    tables = sorted(project.glob("labeled-data/*/CollectedData_*.csv"))
    if not tables:
        h5 = sorted(project.glob("labeled-data/*/CollectedData_*.h5"))
        hint = " Only .h5 label tables were found: export them to CSV in DeepLabCut (or open and save the labels)." \
            if h5 else (" Label frames in DeepLabCut first (its labelling GUI saves them there), or pass the project "
                        "folder that holds them.")
        raise UserError(f"{project}: no labeled-data/*/CollectedData_*.csv found.{hint}")
    entries: list[Entry] = []
    for table in tables:
        entries.extend(_read_table(table, project, names, start=len(entries)))
    return names, skeleton, entries


def _read_table(path: Path, project: Path, names: list[str], start: int) -> list[Entry]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a readable CSV table ({type(e).__name__}: {e}). Export the labels from "
                        f"DeepLabCut again.") from None
    header_rows = []
    for r in rows[:4]:  # the leading rows whose first cell names a DeepLabCut header
        if not (r and r[0] in ("scorer", "individuals", "bodyparts", "coords")):
            break
        header_rows.append(r)
    nh = len(header_rows)
    by_name = {r[0]: r for r in header_rows}
    if nh < 3 or len(by_name) != nh or not {"scorer", "bodyparts", "coords"} <= set(by_name):
        raise UserError(f"{path}: expected the DeepLabCut header rows scorer / (individuals /) bodyparts / coords, "
                        f"found {[r[:1] for r in rows[:4]]}. Export the labels from DeepLabCut again.")
    coords, parts = by_name["coords"], by_name["bodyparts"]
    individuals = by_name.get("individuals")
    n_index = next((i for i, c in enumerate(coords) if c in ("x", "y", "likelihood")), None)
    if n_index is None or n_index == 0:
        raise UserError(f"{path}: the coords row has no x / y column{' after the image column' if n_index == 0 else ''}"
                        f" ({coords[:8]}). Export the labels from DeepLabCut again.")
    short = [r[0] for r in header_rows if len(r) < len(coords)]
    if short:
        raise UserError(f"{path}: the header row(s) {', '.join(short)} have fewer cells than the coords row "
                        f"({len(coords)}), so some columns name no body part or individual. Export the labels from "
                        f"DeepLabCut again.")
    columns = []  # (column, person, joint id, axis)
    persons: dict[str, int] = {}
    for c in range(n_index, len(coords)):
        if coords[c] not in ("x", "y"):
            continue
        part = parts[c]
        if part not in names:
            raise UserError(f"{path}: column {c} labels body part '{part}', which is not in config.yaml's bodyparts "
                            f"{names}. Add it to config.yaml or remove the column.")
        person = persons.setdefault(individuals[c] if individuals else "", len(persons))
        columns.append((c, person, names.index(part), 0 if coords[c] == "x" else 1))
    entries = []
    for r, row in enumerate(rows[nh:]):
        if not any(row):
            continue
        rel = Path(*[p for p in row[:n_index] if p])
        joints = np.zeros((max(len(persons), 1), len(names), 3), np.float32)
        axes_given = np.zeros(joints.shape[:2], np.int32)  # a joint is labelled when both x and y are given
        problems = []
        for c, person, jid, axis in columns:
            cell = row[c].strip() if c < len(row) else ""
            if cell == "":
                continue
            try:
                joints[person, jid, axis] = float(cell)
            except ValueError:
                problems.append(("malformed entry", f"{path} row {r + nh + 1} column {c}: '{cell}' is not a number"))
            axes_given[person, jid] += 1
        joints[..., 2] = np.where(axes_given == 2, 2.0, 0.0)
        joints[axes_given < 2] = 0.0
        bad = (joints[..., 2] > 0) & ~np.isfinite(joints[..., :2]).all(-1)
        if bad.any():
            problems.append(("non-finite coordinates", f"{path} row {r + nh + 1} has NaN/inf coordinates"))
        entries.append(Entry(index=start + len(entries), image_path=project / rel, joints=joints,
                             meta={"table": str(path.relative_to(project)), "row": r}, problems=problems[:1]))
    return entries


def convert(project: str | Path, out: str | Path, *, split: str | None = None, seed: int = 0,
            workers: int | None = None, skip_bad: bool = False, overwrite: bool = False,
            samples_per_shard: int = 512, reencode_jpeg: int | None = None, quiet: bool = False) -> dict:
    """Convert a DeepLabCut project into a shards folder. Returns {"samples": {split: n}, "num_joints": K}."""
    project = Path(project)
    names, skeleton, entries = read_project(project)
    splits = assign_splits(len(entries), parse_split(split), seed)
    load = Reencode(load_image_entry, reencode_jpeg) if reencode_jpeg else load_image_entry
    source = {"kind": "dlc", "path": str(project.resolve()), "split": split or "", "seed": seed}
    writer = ShardWriter(out, len(names), names, None, skeleton, samples_per_shard, source, overwrite)
    written = convert_entries(entries, writer, source=str(project), splits=splits, load=load, workers=workers,
                              skip_bad=skip_bad, quiet=quiet)
    return {"samples": written, "num_joints": len(names)}
