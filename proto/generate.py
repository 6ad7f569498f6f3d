"""Generate the Python stubs of ``proto/fseg/v1/fseg.proto`` into ``proto/fseg_proto/v1``.

The stubs are checked in so the light client installs without grpcio-tools;
``python proto/generate.py --check`` (run by ``make test``) fails when they no
longer match the .proto. protoc names imports after the .proto's path
(``from fseg.v1 import ...``); they are rewritten to relative imports so the
stubs live inside the ``fseg_proto`` package.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = "fseg/v1/fseg.proto"
TARGET = HERE / "fseg_proto" / "v1"
OUTPUTS = ("fseg_pb2.py", "fseg_pb2.pyi", "fseg_pb2_grpc.py")


def generate(into: Path) -> None:
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        str(HERE / SOURCE),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for name in OUTPUTS:
        path = into / "fseg" / "v1" / name
        text = path.read_text().replace("from fseg.v1 import fseg_pb2", "from . import fseg_pb2")
        (into / name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if args.check:
            stale = [
                n
                for n in OUTPUTS
                if not (TARGET / n).exists()
                or not filecmp.cmp(Path(tmp) / n, TARGET / n, shallow=False)
            ]
            if stale:
                print(f"stale generated stubs: {', '.join(stale)}; run python proto/generate.py")
                return 1
            print("generated stubs match proto/fseg/v1/fseg.proto")
            return 0
        TARGET.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            shutil.copyfile(Path(tmp) / name, TARGET / name)
    print(f"wrote {', '.join(OUTPUTS)} to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
