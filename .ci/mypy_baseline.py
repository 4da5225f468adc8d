"""Compare mypy's errors with the policy of `.ci/typecheck`.

Reads mypy's output (one error a line, `path:line: error: message  [code]`) on stdin, then:

- any error outside the sandbox fails the check (product code has none);
- the sandbox's errors are compared with the baseline file, as `path: [code] message` lines
  without line numbers (so unrelated edits don't churn it), counted as a multiset:
  an error not in the baseline fails; a baseline entry that no longer occurs fails too,
  asking to shrink the baseline (`--update-baseline`), so the file only shrinks;
- with `--update-baseline` the baseline is rewritten to the current errors, refused when that
  adds any entry unless `--force` is given as well.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

SANDBOX = "crm_kpi_worker/sandbox/"
# `path:line: error: message  [code]` (mypy's default, non-pretty format; column optional).
ERROR = re.compile(
    r"^(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<message>.*?)(?:  \[(?P<code>[a-z-]+)\])?$"
)
# Messages that name another line ("already defined on line 12") would churn with it.
LINE_REFERENCE = re.compile(r"\bline \d+\b")
# The closing line; without it mypy did not finish (not installed, bad configuration, crash).
SUMMARY = re.compile(r"^(?:Success: no issues found|Found (?P<count>\d+) errors? in)")


def normalize(path: str, message: str, code: str | None) -> str:
    return f"{path}: [{code or 'error'}] {LINE_REFERENCE.sub('line N', message)}"


def read_baseline(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    lines = path.read_text(encoding="utf-8").splitlines()
    return Counter(line for line in lines if line.strip() and not line.startswith("#"))


def write_baseline(path: Path, errors: Counter[str]) -> None:
    header = (
        "# mypy errors left in the sandbox (crm_kpi_worker/sandbox/): path: [code] message.\n"
        "# This file only shrinks. Regenerate with `bash .ci/typecheck --update-baseline`.\n"
    )
    path.write_text(header + "".join(f"{e}\n" for e in sorted(errors.elements())), "utf-8")


def show(errors: Counter[str]) -> None:
    for error, count in sorted(errors.items()):
        print(f"  {count}x {error}" if count > 1 else f"  {error}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument("--force", action="store_true", help="let --update-baseline grow it")
    args = parser.parse_args(argv)

    output = sys.stdin.read().splitlines()
    summary = next((m for m in map(SUMMARY.match, output) if m), None)
    if summary is None:
        print(*output, sep="\n")
        print("typecheck: mypy did not run to the end (no summary line above)")
        return 2
    product: list[str] = []
    sandbox: Counter[str] = Counter()
    unparsed: list[str] = []
    for raw in output:
        if ": error: " not in raw:
            continue  # notes, the summary line
        match = ERROR.match(raw)
        if match is None:
            unparsed.append(raw)
        elif match["path"].startswith(SANDBOX):
            sandbox[normalize(match["path"], match["message"], match["code"])] += 1
        else:
            product.append(raw)

    failed = False
    counted = len(product) + sum(sandbox.values()) + len(unparsed)
    if int(summary["count"] or 0) != counted:
        print(f"typecheck: mypy reported {summary['count']} error(s), this script read {counted}")
        failed = True
    if unparsed:
        print("typecheck: mypy lines this script cannot read:", *unparsed, sep="\n  ")
        failed = True
    if product:
        print(f"typecheck: {len(product)} mypy error(s) outside the sandbox (must be zero):")
        print(*product, sep="\n")
        failed = True

    baseline = read_baseline(args.baseline)
    new = sandbox - baseline
    fixed = baseline - sandbox
    if args.update_baseline:
        if new and not args.force:
            print(f"typecheck: refusing to grow {args.baseline} by {sum(new.values())} error(s)")
            print("(fix them, or pass --force with a reason in the commit message):")
            show(new)
            return 1
        write_baseline(args.baseline, sandbox)
        print(
            f"typecheck: {args.baseline} now lists {sum(sandbox.values())} sandbox error(s)"
            f" ({sum(fixed.values())} removed, {sum(new.values())} added)."
        )
        return 1 if failed else 0

    if new:
        print(f"typecheck: {sum(new.values())} sandbox error(s) not in {args.baseline}:")
        show(new)
        failed = True
    if fixed:
        print(
            f"typecheck: {sum(fixed.values())} error(s) in {args.baseline} no longer occur;"
            " shrink it with `bash .ci/typecheck --update-baseline`:"
        )
        show(fixed)
        failed = True
    if not new and not fixed:
        print(f"typecheck: the sandbox matches its baseline ({sum(sandbox.values())} error(s)).")
    if not failed:
        print("typecheck: no errors outside the sandbox.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
