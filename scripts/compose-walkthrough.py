#!/usr/bin/env python3
"""Runs the compose walkthrough exactly as the README shows it, checking its results.

The walkthrough is every ```bash block between `<!-- compose-walkthrough -->` and
`<!-- /compose-walkthrough -->` in the given Markdown file; there may be several such regions
(the default stack, then the `postgres` profile). The blocks run in order, in one bash process
with `set -euo pipefail`, from the repository root, so a later region uses the helpers an
earlier one defined. A line ending in

    COMMAND   #=> EXPECTED

is a check: COMMAND's output must equal EXPECTED (bash-expanded, so `#=> $ADA` compares with
a variable); the first mismatch stops the run. Other comment lines are printed as steps.

usage: compose-walkthrough.py [--timeout SECONDS] FILE.md
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- compose-walkthrough -->", "<!-- /compose-walkthrough -->"
CHECK = re.compile(r"^(?P<cmd>\S.*?)\s+#=>\s*(?P<expected>.*?)\s*$")
PRELUDE = r"""set -euo pipefail
__check() { # line expected got
  if [ "$2" = "$3" ]; then printf '   ok   %s\n' "$2"
  else printf '   FAIL %s\n        expected: %s\n        got:      %s\n' "$1" "$2" "$3"; exit 1; fi
}
"""


def walkthrough_blocks(markdown: str) -> list[str]:
    regions = re.findall(re.escape(BEGIN) + r"(.*?)" + re.escape(END), markdown, re.S)
    if not regions or markdown.count(BEGIN) != len(regions) or markdown.count(END) != len(regions):
        raise SystemExit(f"no {BEGIN} … {END} region found, or one is not closed")
    return [b for region in regions for b in re.findall(r"^```bash\n(.*?)^```", region, re.S | re.M)]


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def to_script(blocks: list[str]) -> str:
    out = [PRELUDE]
    for block in blocks:
        for line in block.splitlines():
            m = CHECK.match(line)
            if m:
                cmd, expected = m["cmd"], m["expected"]
                out.append(f"echo {quote('$ ' + cmd)}")
                out.append(f'__check {quote(cmd)} "{expected}" "$({cmd})"')
            elif line.startswith("# "):
                out.append(f"echo {quote(line)}")
            else:
                out.append(line)
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the compose walkthrough of a Markdown file.")
    ap.add_argument("--timeout", type=float, default=1800, help="for the whole walkthrough (seconds)")
    ap.add_argument("markdown")
    args = ap.parse_args()
    script = to_script(walkthrough_blocks(Path(args.markdown).read_text()))
    # Own process group: on timeout, or when this runner is stopped, every command the
    # walkthrough started is stopped too.
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        print(f"walkthrough: still running after {args.timeout:.0f} s, stopped", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
