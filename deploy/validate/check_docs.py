#!/usr/bin/env python3
"""docs/deploy.md stays usable: one section per deployment path, every `make TARGET` it tells
the reader to run is defined (Makefile or mk/*.mk), and every repository file it names exists.

usage: check_docs.py [DOC]          Python 3.11 standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("## Local", "## Docker Compose", "## Istio / Kubernetes")
PATH_PREFIXES = ("envoy/", "deploy/", "docs/", "mk/", "crates/", "auth-service/", "src/")
ROOT_FILES = {"Dockerfile", "docker-compose.yml", "Makefile", "README.md", ".dockerignore"}


def make_targets() -> set[str]:
    targets: set[str] = set()
    for mk in [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]:
        for line in mk.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.\- ]+):(?![:=])", line)
            if m:
                targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return targets


def main() -> int:
    doc = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/deploy.md"
    text = doc.read_text()
    problems = []
    headings = [line.strip() for line in text.splitlines() if line.startswith("## ")]
    for s in SECTIONS:
        if headings.count(s) != 1:
            problems.append(f"expected exactly one section `{s}`")
    targets = make_targets()
    # commands: fenced blocks and inline code spans
    code = "\n".join(re.findall(r"```.*?```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    for t in sorted(set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code))):
        if t not in targets:
            problems.append(f"`make {t}` is mentioned but no such target is defined")
    for p in sorted(set(re.findall(r"`([^`\s]+)`", text))):
        p = p.rstrip(".,:")
        if p in ROOT_FILES or (p.startswith(PATH_PREFIXES) and "*" not in p and "…" not in p and "$" not in p):
            if not (ROOT / p).exists():
                problems.append(f"`{p}` is named but does not exist")
    if problems:
        print(f"{doc.relative_to(ROOT)}: FAILED", *[f"  - {x}" for x in problems], sep="\n", file=sys.stderr)
        return 1
    print(f"{doc.relative_to(ROOT)}: sections and references ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
