"""``fseg-server import-concepts | fit-concepts | name-concepts | show-concepts``."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import existing_path, output_file, parse_ks, print_json
from .errors import FsegError, InvalidInput, NotFound
from .pipeline.options import MAX_K

if TYPE_CHECKING:
    from .concepts.bank import ConceptBank

SLIDE_SUFFIXES = {
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
    ".bif", ".dcm", ".czi", ".png", ".jpg", ".jpeg",
}  # fmt: skip


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "import-concepts",
        help="convert a published F-SEG bank (.joblib) to a safe .safetensors bank",
    )
    p.add_argument("joblib", type=existing_path, help="the authors' .joblib file {k: centres}")
    p.add_argument("--extractor", required=True, help="extractor the centres belong to (uni...)")
    p.add_argument(
        "--out", required=True, type=output_file, help="bank file to write (.safetensors)"
    )
    p.add_argument(
        "--fitted-mpp",
        type=float,
        default=1.0,
        help="µm/px the centres were fitted at (default 1.0: the authors' 10x tiles)",
    )
    p.set_defaults(handler=import_concepts)

    p = commands.add_parser(
        "fit-concepts",
        help="fit a concept bank (k-means, several k in one pass) on images or slides",
    )
    p.add_argument("inputs", nargs="+", help="slides, images, folders or globs")
    p.add_argument("--extractor", default="stain", help="extractor id (default: stain)")
    p.add_argument("--weights", help="extractor checkpoint (.safetensors, .bin, .pth)")
    p.add_argument("--k", default="8,16,32", help="comma-separated k values (default 8,16,32)")
    p.add_argument(
        "--out", required=True, type=output_file, help="bank file to write (.safetensors)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--mpp", type=float, help="µm per level-0 pixel, for slides that lack it")
    p.add_argument("--target-mpp", type=float, help="working resolution (µm/px)")
    p.add_argument(
        "--tiles-per-slide", type=int, default=64, help="tissue tiles sampled per input (64)"
    )
    p.add_argument(
        "--max-samples", type=int, default=200_000, help="reservoir size in vectors (200000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=fit_concepts)

    p = commands.add_parser("name-concepts", help="give the clusters of one k names and colours")
    p.add_argument("bank", type=existing_path)
    p.add_argument("--k", type=int, required=True)
    p.add_argument(
        "--names",
        required=True,
        type=existing_path,
        help='JSON: ["Stroma", ...], [{"name": ..., "color": "#rrggbb"}, ...] '
        'or {"3": "Stroma", ...}',
    )
    p.add_argument("--out", type=output_file, help="write here instead of rewriting the bank")
    p.set_defaults(handler=name_concepts)

    p = commands.add_parser("show-concepts", help="describe a bank: extractor, k values, classes")
    p.add_argument("bank", type=existing_path)
    p.add_argument("--k", type=int, help="list every class of this k (index, colour, name)")
    p.add_argument("--json", action="store_true", help="print the bank's metadata as JSON")
    p.set_defaults(handler=show_concepts)


def import_concepts(args: argparse.Namespace) -> int:
    from .concepts import import_joblib
    from .extract import extractor_spec

    spec = extractor_spec(args.extractor)
    bank = import_joblib(args.joblib, spec.name, spec.feature_dim, mpp=args.fitted_mpp)
    bank.save(args.out)
    print(f"wrote {args.out}: {spec.name}, {spec.feature_dim} channels, k = {bank.ks}")
    too_many = [k for k in bank.ks if k > MAX_K]
    if too_many:
        print(
            f"note: k = {', '.join(map(str, too_many))} is kept in the bank but cannot be used "
            f"to segment: labels take one byte per cell, so k is at most {MAX_K}",
            file=sys.stderr,
        )
    return 0


def fit_concepts(args: argparse.Namespace) -> int:
    from .device import place, resolve_device
    from .extract import create_extractor
    from .pipeline.device_worker import DeviceWorker
    from .pipeline.fit import fit_bank, provenance_reservoir, sample_slides
    from .pipeline.options import SegmentOptions
    from .slide.reader import open_slide

    ks = parse_ks(args.k)
    paths = expand_inputs(args.inputs)
    device = resolve_device(args.device)
    extractor = place(create_extractor(args.extractor, args.weights), device)
    options = SegmentOptions(k=max(ks), slide_mpp=args.mpp, target_mpp=args.target_mpp)
    reservoir = provenance_reservoir(args.max_samples, extractor.spec.feature_dim, args.seed)
    worker = DeviceWorker(device)

    def report(index: int, outcome: int | FsegError) -> None:
        said = f"left out: {outcome}" if isinstance(outcome, FsegError) else f"{outcome} samples"
        print(f"[{index + 1}/{len(paths)}] {paths[index].name}: {said}", file=sys.stderr)

    try:
        sampled = sample_slides(
            len(paths), lambda i: open_slide(paths[i]), extractor, worker, reservoir,
            lambda i: options,
            max_tiles=args.tiles_per_slide, report=report,
        )  # fmt: skip
    finally:
        worker.close()
    source = f"fitted on {sampled.count} inputs ({reservoir.seen} window samples)"
    mpp = args.target_mpp or extractor.spec.mpp
    bank = fit_bank(reservoir, ks, extractor, mpp, source, inputs=sampled.inputs)
    bank.save(args.out)
    print(
        f"wrote {args.out}: {bank.extractor}, k = {bank.ks}, {len(reservoir.sample)} samples used"
    )
    return 0


def name_concepts(args: argparse.Namespace) -> int:
    from .concepts import ConceptClass, load_bank
    from .concepts.palette import parse_color

    bank = load_bank(args.bank)
    bank.concepts(args.k)
    current = bank.classes[args.k]
    try:
        entries = json.loads(args.names.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{args.names} is not readable JSON ({exc})") from exc
    updates = _name_updates(entries, args.k)
    classes = list(current)
    try:
        for index, (name, color) in updates.items():
            old = classes[index]
            classes[index] = ConceptClass(
                name if name is not None else old.name,
                parse_color(color) if color is not None else old.color,
            )
    except ValueError as exc:
        raise InvalidInput(f"{args.names}: {exc}") from exc
    out = args.out or args.bank
    bank.renamed(args.k, classes).save(out)
    print(f"wrote {out}: k={args.k} classes " + ", ".join(c.name for c in classes))
    return 0


def _name_updates(entries: object, k: int) -> dict[int, tuple[str | None, object]]:
    """Normalise the accepted JSON shapes to {index: (name or None, colour or None)}."""
    if isinstance(entries, list):
        if len(entries) != k:
            raise InvalidInput(f"the names list has {len(entries)} entries; k={k} needs {k}")
        items = dict(enumerate(entries))
    elif isinstance(entries, dict):
        try:
            items = {int(key): value for key, value in entries.items()}
        except ValueError:
            raise InvalidInput('name keys must be class indices such as "3"') from None
    else:
        raise InvalidInput("names must be a JSON list or an object keyed by class index")
    updates = {}
    for index, value in items.items():
        if not 0 <= index < k:
            raise InvalidInput(f"class index {index} is outside 0..{k - 1}")
        if isinstance(value, str):
            updates[index] = (value, None)
        elif isinstance(value, dict) and ("name" in value or "color" in value):
            updates[index] = (value.get("name"), value.get("color"))
        else:
            raise InvalidInput(f"entry for class {index} must be a name or {{name, color}}")
    return updates


def show_concepts(args: argparse.Namespace) -> int:
    from .concepts import load_bank
    from .concepts.palette import hex_color

    bank = load_bank(args.bank)
    if args.json:
        meta = bank.metadata()
        if "provenance" in meta:  # thousands of window rows: their count says enough here
            meta["provenance"]["windows"] = len(meta["provenance"]["windows"])
        print_json({**meta, "sha256": bank.digest})
        return 0
    if args.k is not None:
        bank.concepts(args.k)  # refuses a k the bank lacks, naming the ones it has
        for index, concept in enumerate(bank.classes[args.k]):
            print(f"{index:4d}  {hex_color(concept.color)}  {concept.name}")
        return 0
    for line in describe_bank(bank, args.bank):
        print(line)
    return 0


def describe_bank(bank: ConceptBank, path: Path) -> list[str]:
    """A few lines a person reads: what the bank is for, its k values, which are named."""
    from .concepts.palette import default_names, glass_name

    at = f", fitted at {bank.mpp:g} µm/px" if bank.mpp else ""
    lines = [
        f"{path}: sha256 {bank.digest[:16]}",
        f"  extractor {bank.extractor}, {bank.feature_dim} channels{at}",
        f"  source: {bank.source or 'not recorded'}",
        f"  samples' provenance: {_provenance_line(bank)}",
    ]
    for k in bank.ks:
        defaults = {*default_names(k), glass_name(k)}
        named = [c.name for c in bank.classes[k] if c.name not in defaults]
        said = f"{len(named)} named: {', '.join(named[:6])}" if named else "default names"
        said += ", ..." if len(named) > 6 else ""
        unusable = f"; cannot segment (k is at most {MAX_K})" if k > MAX_K else ""
        lines.append(f"  k = {k}: {said}{unusable}")
    lines.append("  (--k K lists one k's classes; --json prints everything)")
    return lines


def _provenance_line(bank: ConceptBank) -> str:
    if bank.provenance is None:
        return "not recorded (fseg atlas draws windows from the inputs it is given)"
    inputs = len(bank.provenance.inputs)
    return f"{len(bank.provenance.windows)} windows on {inputs} input{'s' if inputs != 1 else ''}"


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files as given, folders by their slide and image files, globs by their matches."""
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            paths.extend(p for p in sorted(path.iterdir()) if p.suffix.lower() in SLIDE_SUFFIXES)
        elif path.exists():
            paths.append(path)
        else:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise NotFound(f"{pattern} matches no file")
            paths.extend(Path(m) for m in matches)
    if not paths:
        raise NotFound("no slide or image files among the inputs")
    return paths
