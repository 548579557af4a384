"""Regenerate the inter-node gRPC code from cluster/proto/s4_cluster.proto: ``python -m s4.tools.gen_proto``.

The generated Python (betterproto2 messages, an async grpclib stub and service base) is committed under
cluster/wire/; tests/unit/cluster/test_wire_drift.py regenerates it into a temporary directory and fails when the
committed code no longer matches the .proto. Needs the ``test`` extra (betterproto2_compiler, grpcio-tools).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CLUSTER_DIR = Path(__file__).resolve().parent.parent / "cluster"
PROTO = CLUSTER_DIR / "proto" / "s4_cluster.proto"
WIRE_DIR = CLUSTER_DIR / "wire"
PLUGIN = "protoc-gen-python_betterproto2"
OPTIONS = "client_generation=async,server_generation=async"


class GenerateError(RuntimeError):
    """The generator is missing or protoc failed."""


def generate(out_dir: Path, proto: Path = PROTO) -> None:
    """Run protoc with the betterproto2 plugin into ``out_dir`` (which must exist)."""
    # where pip put this Python's scripts (the plugin, and the `ruff` the plugin formats its output with) first
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    try:
        from ruff.__main__ import find_ruff_bin  # the ruff package of the test extra, wherever pip put its binary

        dirs.insert(0, str(Path(find_ruff_bin()).parent))
    except (ImportError, FileNotFoundError):
        pass  # then whichever ruff is on PATH
    bins = os.pathsep.join(dict.fromkeys(dirs))
    path = os.pathsep.join([bins, os.environ.get("PATH", "")])
    plugin = shutil.which(PLUGIN, path=path)
    if plugin is None:
        raise GenerateError(f"{PLUGIN} not found: pip install -e '.[test]' (betterproto2_compiler, grpcio-tools)")
    env = dict(os.environ, PATH=path)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"--plugin={PLUGIN}={plugin}",
           f"--python_betterproto2_out={out_dir}", f"--python_betterproto2_opt={OPTIONS}", str(proto)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise GenerateError(f"protoc failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def generated_files(root: Path) -> dict[str, str]:
    """Relative path -> text of every generated file under ``root``."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WIRE_DIR, help="output directory (default: cluster/wire)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            generate(Path(tmp))
        except GenerateError as exc:
            print(f"gen_proto: {exc}", file=sys.stderr)
            return 1
        fresh = generated_files(Path(tmp))
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        for stale in set(generated_files(out)) - set(fresh):
            (out / stale).unlink()
        for rel, text in fresh.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
    print(f"generated {len(fresh)} files from {PROTO.name} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
