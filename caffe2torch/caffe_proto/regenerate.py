"""Regenerate `caffe_pb2.py` from `caffe.proto`, or check that the committed bindings are current.

    python -m caffe2torch.caffe_proto.regenerate           # rewrite caffe_pb2.py
    python -m caffe2torch.caffe_proto.regenerate --check   # exit 1 if caffe_pb2.py is stale

The bindings are committed so that users need no protobuf compiler. protoc's output depends on
its version (the gencode names the protobuf runtime it needs), so only the grpcio-tools version
pinned in setup.py may write them; that keeps regeneration byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = PROTO_DIR / "caffe.proto"
BINDINGS_FILE = PROTO_DIR / "caffe_pb2.py"
PINNED_GRPCIO_TOOLS = "1.85.1"


class RegenerationError(RuntimeError):
    """protoc is missing, of the wrong version, or rejected the schema."""


def _require_pinned_protoc() -> None:
    try:
        installed = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        raise RegenerationError(
            f"grpcio-tools is not installed; pip install grpcio-tools=={PINNED_GRPCIO_TOOLS}"
        ) from None
    if installed != PINNED_GRPCIO_TOOLS:
        raise RegenerationError(
            f"grpcio-tools {installed} is installed but the bindings are generated with "
            f"{PINNED_GRPCIO_TOOLS}; pip install grpcio-tools=={PINNED_GRPCIO_TOOLS}"
        )


def generate_into(out_dir: Path) -> Path:
    """Run protoc on caffe.proto, writing `caffe_pb2.py` into `out_dir`; returns its path."""
    _require_pinned_protoc()
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}", f"--python_out={out_dir}", str(PROTO_FILE),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RegenerationError(f"protoc failed on {PROTO_FILE}:\n{result.stderr.strip()}")
    return out_dir / BINDINGS_FILE.name


def fresh_bindings() -> bytes:
    """The bytes protoc produces from the current caffe.proto."""
    with tempfile.TemporaryDirectory() as tmp:
        return generate_into(Path(tmp)).read_bytes()


def regenerate() -> bool:
    """Rewrite caffe_pb2.py (atomically) when it differs; returns whether it changed."""
    new = fresh_bindings()
    if BINDINGS_FILE.exists() and BINDINGS_FILE.read_bytes() == new:
        return False
    fd, tmp_name = tempfile.mkstemp(dir=PROTO_DIR, prefix=".caffe_pb2.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(new)
        os.replace(tmp_name, BINDINGS_FILE)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return True


def is_current() -> bool:
    """True when the committed caffe_pb2.py is exactly what protoc makes of caffe.proto."""
    return BINDINGS_FILE.exists() and BINDINGS_FILE.read_bytes() == fresh_bindings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m caffe2torch.caffe_proto.regenerate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="only check; exit 1 if caffe_pb2.py is stale"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            if is_current():
                print(f"{BINDINGS_FILE} is current")
                return 0
            print(f"{BINDINGS_FILE} is stale: run python -m caffe2torch.caffe_proto.regenerate",
                  file=sys.stderr)
            return 1
        changed = regenerate()
    except RegenerationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{'rewrote' if changed else 'unchanged:'} {BINDINGS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
