"""Stand-in for `microforge serve up` in the Slurm tests: answers HTTP on --host/--port."""

import argparse
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = f"fake serve on {os.environ.get('SLURMD_NODENAME', '?')} ray={os.environ.get('RAY_ADDRESS')}\n"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
print(f"fake serve listening on {args.host}:{args.port}", flush=True)
http.server.HTTPServer((args.host, args.port), Handler).serve_forever()
