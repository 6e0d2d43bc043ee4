# An upstream for the client driver's tests: python3's http.server, HTTP/1.0 or
# HTTP/1.1 (argv[1]), printing its port on stdout once it listens.
import http.server
import socketserver
import sys


def read_chunked(rfile):
    data = b""
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b""):
                pass
            return data
        data += rfile.read(size)
        rfile.readline()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if sys.argv[1] == "1.1" else "HTTP/1.0"

    def log_message(self, *args):
        pass

    def count(self):
        # One handler instance per connection: this counts its requests.
        self.n = getattr(self, "n", 0) + 1
        return self.n

    def reply(self, body, length=True, status=200):
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.count()
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def do_GET(self):
        n = self.count()
        path = self.path
        if path.startswith("/hello"):
            self.reply(("hello %s #%d" % (path, n)).encode())
        elif path == "/unsized":
            # HTTP/1.0: no length, the close ends the body.
            self.reply(b"until the close", length=False)
            self.close_connection = True
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "x-sum")
            self.end_headers()
            for piece in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\nx-sum: 3\r\n\r\n")
        elif path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/interim":
            self.send_response_only(100)
            self.end_headers()
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
            self.reply(b"final #%d" % n)
        elif path == "/upgrade":
            self.send_response(101)
            self.send_header("Upgrade", "echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(b"first words|")
            self.wfile.flush()
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                self.wfile.write(line.upper())
                self.wfile.flush()
            self.close_connection = True
        elif path == "/smuggle":
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"
            )
            self.close_connection = True
        elif path == "/cut-head":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Le")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/vanish":
            self.close_connection = True
        else:
            self.reply(b"no such path", status=404)

    def do_POST(self):
        n = self.count()
        if self.path == "/early":
            # Answers before reading the body (as a server refusing an upload does).
            self.reply(b"too large", status=413)
            self.close_connection = True
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = read_chunked(self.rfile)
            framing = "chunked"
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            framing = "length"
        self.reply(b"%s %d #%d|" % (framing.encode(), len(body), n) + body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
