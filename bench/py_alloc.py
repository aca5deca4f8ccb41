"""A Python program's allocator traffic, for the collector's figures on a real program.

    PYTHONMALLOC=malloc python3 bench/py_alloc.py [ROUNDS]

With PYTHONMALLOC=malloc every object goes to malloc/free, so this makes millions of calls of
varied sizes from varied addresses (dicts, lists and strings, a live set that churns), with the
interpreter's own mmap, brk and RSS changes between them: unlike a malloc(64)/free loop, whose
columns repeat and compress fast, this is what the recorder meets in a real program.
"""

from __future__ import annotations

import random
import sys


def main(rounds: int) -> None:
    rng = random.Random(1)
    keep: list[dict[str, list[int]]] = []
    for _ in range(rounds):
        keep.append({str(j): [j] * rng.randint(1, 40) for j in range(8)})
        if len(keep) > 2000:
            del keep[rng.randrange(len(keep))]
            keep.pop(0)
    print(f"live dicts at the end: {len(keep)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60_000)
