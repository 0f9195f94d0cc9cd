"""A tiny service: answers health checks on port 8080."""
import http.server

VERSION = "1.0"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok " + VERSION.encode() + b"\n")


def main():
    http.server.HTTPServer(("", 8080), Health).serve_forever()


if __name__ == "__main__":
    main()
