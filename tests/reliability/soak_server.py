"""The API with the fake predictor and a real ListingIndex, served by real uvicorn in a process of its
own (so the soak test can read this server's memory and nothing else's).

Usage: python soak_server.py ARTIFACTS_DIR   (FBM_API_KEY in the environment)
Prints the base URL on its first line, serves until its standard input closes, then shuts down
cleanly (uvicorn's graceful exit, then the index is closed).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: test_api_fakes

from test_api_fakes import fake_services, live_server, tiny_config  # noqa: E402


def main() -> int:
    config = tiny_config(Path(sys.argv[1]), api_key=os.environ["FBM_API_KEY"])
    services = fake_services(config)
    try:
        with live_server(config, services) as url:
            print(url, flush=True)
            sys.stdin.read()  # until the test closes the pipe (or dies)
    finally:
        services.index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
