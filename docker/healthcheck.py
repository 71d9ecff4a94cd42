"""Container health checks without curl.

    python /app/docker/healthcheck.py [URL]          exit 0 when URL answers 200
                                                     (default http://127.0.0.1:$API_PORT/healthz)
    python /app/docker/healthcheck.py --file PATH --max-age SECONDS
                                                     exit 0 when PATH was touched within SECONDS
                                                     (the Discord bot touches it while its gateway
                                                     connection is up: DISCORD_HEALTH_FILE)
"""

import os
import sys
import time
import urllib.request


def check_file(path: str, max_age_s: float) -> int:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    if age > max_age_s:
        print(f"unhealthy: {path} is {age:.0f} s old (gateway down?)", file=sys.stderr)
        return 1
    return 0


def check_url(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - a fixed local URL
            return 0 if response.status == 200 else 1
    except Exception as error:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--file"]:
        max_age = float(args[args.index("--max-age") + 1]) if "--max-age" in args else 120.0
        sys.exit(check_file(args[1], max_age))
    sys.exit(check_url(args[0] if args else f"http://127.0.0.1:{os.environ.get('API_PORT', '8080')}/healthz"))
