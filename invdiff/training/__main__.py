"""``python -m invdiff.training --config FILE [key=value ...]``: train a diffusion prior."""

from __future__ import annotations

import argparse
import sys

from . import load_config, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m invdiff.training",
        description="Train a diffusion prior. Example: python -m invdiff.training --config "
        "examples/train_brain_prior.yaml steps=2000 output_dir=runs/brain",
    )
    parser.add_argument("--config", help="YAML or JSON config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (values parsed as YAML)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        path = train(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
