"""`retouch serve` and `retouch worker` as processes, with the tests' fake models beside the real ones.

    python tests/process_main.py serve
    python tests/process_main.py worker --models fake-invert,fake-slow --workers 2

Settings come from the environment (RETOUCH_*), as for the real command, which this runs.
"""

from __future__ import annotations

import argparse
import sys

from fakes import ALL_MODELS

from retouch.cli import choose_slugs, load_settings, run_server, run_worker


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve", "worker"])
    parser.add_argument("--models", default=None)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args(arguments)
    settings = load_settings()
    if options.command == "serve":
        run_server(settings, ALL_MODELS)
        return 0
    return run_worker(settings, ALL_MODELS, choose_slugs(ALL_MODELS, options.models), options.workers, None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
