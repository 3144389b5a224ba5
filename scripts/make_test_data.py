#!/usr/bin/env python3
"""Generate Groundbreak's synthetic test/demo/benchmark data.

Examples:
  python scripts/make_test_data.py out/demo --preset demo          # 4 dates, 6 x 6 km, ~30 s
  python scripts/make_test_data.py out/tiny --preset test --seed 2 # 3 dates, 1.5 x 1.5 km, ~2 s
  python scripts/make_test_data.py out/bench --preset large        # one 10,240² scene + mask, ~2 min
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from groundbreak import world
from groundbreak.errors import GroundbreakError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--preset", choices=("demo", "test", "large"), default="demo")
    parser.add_argument("--seed", type=int, default=None, help="world seed (default: the preset's)")
    parser.add_argument("--size", type=int, default=10240, help="large preset only: scene width/height in px")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching world exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.preset == "large":
            seed = 11 if args.seed is None else args.seed
            path = args.out_dir / f"large_{seed}_{args.size}.tif"
            if args.force:
                path.unlink(missing_ok=True)
            print(world.generate_large_scene(path, size=args.size, seed=seed))
            return 0
        make = world.demo_spec if args.preset == "demo" else world.test_spec
        spec = make() if args.seed is None else make(seed=args.seed)
        man = world.generate_world(args.out_dir, spec, force=args.force)
    except GroundbreakError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    for scene in man.scenes:
        print(scene.path)
    print(man.labels_gpkg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
