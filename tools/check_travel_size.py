"""Check that a fresh clone plus the carried folders fit the accelerator's 64 MiB travel limit.

``python tools/check_travel_size.py [--carry data/carry/photos] [--carry DIR ...] [--repo .] [--rev HEAD]``

What travels to the device machine is the working tree (tracked files and untracked files git
does not ignore) plus the folders named in ``carry`` (docs/accelerator.md). Printed, in MiB:

* the fresh clone: the blobs of ``--rev`` (what ``git clone`` checks out);
* the working tree as it would travel now (it includes uncommitted and untracked files);
* each carried folder (symbolic links count as links: they travel as links).

Exit status 1 if the clone plus the carried folders is over the limit (0 otherwise); a working
tree over the limit is reported as a warning, since it is what a call from this checkout sends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 1024 * 1024


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def clone_bytes(repo: Path, rev: str = "HEAD") -> int:
    """Total size of the files in commit ``rev`` (``git ls-tree -r -l``)."""
    total = 0
    for line in _git(repo, "ls-tree", "-r", "-l", "-z", rev).split(b"\0"):
        if line:
            size = line.split(b"\t", 1)[0].split()[3]
            total += int(size) if size != b"-" else 0  # "-": a submodule (travels without files)
    return total


def worktree_bytes(repo: Path) -> int:
    """Tracked plus untracked-but-not-ignored files as they are on disk now (links as links)."""
    names = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0")
    total = 0
    for name in filter(None, names):
        p = repo / os.fsdecode(name)
        if os.path.lexists(p):
            total += os.lstat(p).st_size
    return total


def folder_bytes(folder: Path) -> int:
    """Files under ``folder`` (symbolic links count as their own small size)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        total += sum(os.lstat(Path(dirpath) / f).st_size for f in files)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--carry", type=Path, action="append", help="carried folder (default: data/carry/photos)")
    ap.add_argument("--limit-mib", type=float, default=LIMIT / 2**20)
    args = ap.parse_args(argv)
    limit = int(args.limit_mib * 2**20)
    carry = args.carry or [Path("data/carry/photos")]
    mib = lambda n: f"{n / 2**20:6.1f} MiB"
    clone, tree = clone_bytes(args.repo, args.rev), worktree_bytes(args.repo)
    carried = 0
    print(f"fresh clone of {args.rev}: {mib(clone)}")
    print(f"working tree as it travels now: {mib(tree)}")
    for c in carry:
        path = c if c.is_absolute() else args.repo / c
        if not path.is_dir():
            print(f"carried folder {c}: missing", file=sys.stderr)
            return 1
        n = folder_bytes(path)
        carried += n
        print(f"carried {c}: {mib(n)}")
    print(f"clone + carried: {mib(clone + carried)} of {mib(limit)} ({(limit - clone - carried) / 2**20:.1f} MiB left)")
    if tree + carried > limit:
        print(f"warning: this working tree + carried is {mib(tree + carried)}, over the limit", file=sys.stderr)
    return 0 if clone + carried <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
