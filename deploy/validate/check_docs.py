#!/usr/bin/env python3
"""docs/deploy.md stays usable: one section per deployment path, every `make TARGET` it tells
the reader to run is defined (Makefile or mk/*.mk), and every repository file it names exists.
Every file its shell blocks write a secret to (`> FILE`, `-keyout FILE`, `--key=FILE`), which the
reader creates in the checkout, is ignored by git and by the Docker build context.

usage: check_docs.py [DOC]          Python 3.11 standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatchcase
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


def shell_blocks(text: str) -> list[str]:
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "shell"):
                    blocks.append("\n".join(lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def written_secrets(text: str) -> set[str]:
    """Relative paths the shell blocks write secrets to (redirections, private keys)."""
    found = set()
    for block in shell_blocks(text):
        for m in re.finditer(r"(?<![0-9&>])>\s*([^\s;&|)]+)|-keyout\s+(\S+)|--key=(\S+)", block):
            path = next(g for g in m.groups() if g).strip("'\"")
            if not path.startswith(("/", "$", "~")):
                found.add(path)
    return found


def git_ignores(path: str) -> bool:
    """Whether git leaves `path` out of `git add -A` (git's own reading of every .gitignore)."""
    r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path])
    return r.returncode == 0


def docker_ignores(path: str) -> bool:
    """Whether a pattern of the root's .dockerignore (all relative to the root; no `!` in it)
    excludes `path` or a directory above it from the build context."""
    ignore_file = ROOT / ".dockerignore"
    patterns = [p.strip().strip("/").removeprefix("**/") for p in ignore_file.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith(("#", "!"))]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatchcase(prefix, p) for p in patterns for prefix in prefixes)


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
    # A key-encryption key or a database password written into the checkout must not be one
    # `git add -A` from a commit, nor sent to a builder with the build context.
    for p in sorted(written_secrets(text)):
        if not git_ignores(p):
            problems.append(f"`{p}` is written with a secret but .gitignore does not cover it")
        if not docker_ignores(p):
            problems.append(f"`{p}` is written with a secret but .dockerignore does not cover it")
    if problems:
        print(f"{doc.relative_to(ROOT)}: FAILED", *[f"  - {x}" for x in problems], sep="\n", file=sys.stderr)
        return 1
    print(f"{doc.relative_to(ROOT)}: sections and references ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
