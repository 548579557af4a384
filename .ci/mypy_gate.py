"""CI gate: mypy may report no error outside the committed baseline, and the baseline only shrinks.

`journal/` is checked with `--strict` (pyproject's overrides) and has no baseline: any error there fails. Elsewhere
the errors that existed when the gate was introduced are listed in `.ci/mypy-baseline.txt`, one per line as
`path: [code] message` (no line numbers, so unrelated edits do not shift them). A new error fails the gate; a
baseline entry that no longer occurs fails it too, so fixed errors are struck from the list in the same change
(`python .ci/mypy_gate.py --update` rewrites it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
LINE = re.compile(r"^\.ci/typecheck/s4/(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<msg>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def current_errors() -> Counter[str]:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        sys.exit(f"mypy failed to run:\n{proc.stdout}{proc.stderr}")
    errors: Counter[str] = Counter()
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            errors[f"{m['path']}: [{m['code']}] {m['msg']}"] += 1
    if proc.returncode == 1 and not errors:
        sys.exit(f"mypy reported errors the gate could not parse:\n{proc.stdout}")
    return errors


def main() -> int:
    errors = current_errors()
    if "--update" in sys.argv:
        strict = [e for e in errors if e.startswith("journal/")]
        if strict:
            print("journal/ is strict and cannot be baselined:\n  " + "\n  ".join(strict))
            return 1
        BASELINE.write_text("".join(f"{e}\n" for e in sorted(errors.elements())))
        print(f"baseline rewritten: {sum(errors.values())} errors")
        return 0
    baseline = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else Counter()
    new, fixed = errors - baseline, baseline - errors
    for entry in sorted(new.elements()):
        print(f"new mypy error: {entry}")
    for entry in sorted(fixed.elements()):
        print(f"fixed, strike it from .ci/mypy-baseline.txt: {entry}")
    if new or fixed:
        print("run `python -m mypy` for line numbers; `python .ci/mypy_gate.py --update` rewrites the baseline")
        return 1
    print(f"mypy gate: {sum(errors.values())} baselined errors, none new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
