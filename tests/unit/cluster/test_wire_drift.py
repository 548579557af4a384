"""Issue 19: the committed gRPC code (cluster/wire/) is what `python -m s4.tools.gen_proto` makes from the .proto.

The comparison is of each file's syntax tree, not its text: the compiler formats its output with whatever ruff is
installed, and a formatter upgrade must not fail the suite; a changed message, field, enum or RPC does."""

from __future__ import annotations

import ast
from pathlib import Path

from s4.tools import gen_proto


def _tree(text: str) -> str:
    return ast.dump(ast.parse(text)) if text.strip() else ""


def test_issue19_committed_wire_code_matches_the_proto(tmp_path: Path) -> None:
    gen_proto.generate(tmp_path)
    fresh = gen_proto.generated_files(tmp_path)
    committed = gen_proto.generated_files(gen_proto.WIRE_DIR)
    assert sorted(committed) == sorted(fresh), "run `python -m s4.tools.gen_proto` and commit cluster/wire/"
    drifted = [rel for rel in fresh if rel.endswith(".py") and _tree(fresh[rel]) != _tree(committed[rel])]
    assert not drifted, f"{drifted} differ from {gen_proto.PROTO.name}: run `python -m s4.tools.gen_proto`"


def test_issue19_drift_check_sees_a_changed_proto(tmp_path: Path) -> None:
    """The comparison above can fail: a proto with one more field generates a different tree."""
    proto = tmp_path / "proto" / gen_proto.PROTO.name
    proto.parent.mkdir()
    proto.write_text(gen_proto.PROTO.read_text().replace("  uint64 journal_seq = 5;  // the highest seq in the "
                                                         "caller's journal",
                                                         "  uint64 journal_seq = 5;\n  string extra = 99;", 1))
    assert "string extra = 99;" in proto.read_text()
    out = tmp_path / "out"
    out.mkdir()
    gen_proto.generate(out, proto)
    fresh = gen_proto.generated_files(out)
    committed = gen_proto.generated_files(gen_proto.WIRE_DIR)
    rel = "s4cluster/v1/__init__.py"
    assert _tree(fresh[rel]) != _tree(committed[rel])
