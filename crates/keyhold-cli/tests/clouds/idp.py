"""A throw-away identity provider on loopback HTTPS, for the DKE and CSE tests.

    python3 idp.py CERT KEY

Prints its port, then serves:
  GET  /keys     its JWK set (every key it ever had, as an IdP keeps old keys)
  POST /mint     {"claims": {...}, "kid": optional, "alg": optional} -> the JWT
                 (signed with its current key unless "kid" names another)
  POST /rotate   a new key becomes current (its kid in the answer)
  POST /forget   the JWK set lists only the current key from now on

Tokens are minted with PyJWT (RS256 by pyca/cryptography), as a real IdP's
would be; the private keys never leave this process.
"""
import base64, http.server, json, ssl, sys, threading
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

keys = {}
order = []
lock = threading.Lock()
only_current = [False]


def b64u(n):
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def new_key():
    kid = "k%d" % (len(order) + 1)
    keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    order.append(kid)
    return kid


def jwks():
    out = []
    for kid in ([order[-1]] if only_current[0] else order):
        pub = keys[kid].public_key().public_numbers()
        out.append({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64u(pub.n), "e": b64u(pub.e)})
    return {"keys": out}


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, code, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/keys":
            with lock:
                return self.answer(200, jwks())
        self.answer(404, {})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        with lock:
            if self.path == "/mint":
                kid = req.get("kid") or order[-1]
                key = keys.get(kid) or keys[order[-1]]
                tok = jwt.encode(req["claims"], key, algorithm=req.get("alg", "RS256"),
                                 headers={"kid": kid})
                return self.answer(200, tok)
            if self.path == "/rotate":
                return self.answer(200, {"kid": new_key()})
            if self.path == "/forget":
                only_current[0] = True
                return self.answer(200, {})
        self.answer(404, {})


new_key()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
