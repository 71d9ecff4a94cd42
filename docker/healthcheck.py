"""Container health check without curl: exit 0 when the API's /healthz answers 200.

    python /app/docker/healthcheck.py [URL]     (default http://127.0.0.1:$API_PORT/healthz)
"""

import os
import sys
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else f"http://127.0.0.1:{os.environ.get('API_PORT', '8080')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - a fixed local URL
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # noqa: BLE001 - any failure means unhealthy
    print(f"unhealthy: {error}", file=sys.stderr)
    sys.exit(1)
