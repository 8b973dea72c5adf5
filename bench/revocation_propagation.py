#!/usr/bin/env python3
"""How long a revocation takes to reach a second node.

Starts two `latchkey serve` nodes on one fresh PostgreSQL database, signs a user in
and approves a client through node A's real HTML forms, redeems the code, then N
times: revokes a grant at A and introspects its access token at B as soon as the
revocation answer arrives, and at once again in a loop until B says inactive.
Prints the distribution of the delay between A's 200 and B's first `active: false`.

    python3 bench/revocation_propagation.py [--bin PATH] [--rounds 50]
"""
import argparse, base64, hashlib, html, http.cookiejar, json, os, re, secrets
import statistics, subprocess, sys, time, urllib.parse, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.environ.get("LATCHKEY_BIN", "/var/tmp/latchkey-target/release/latchkey"))
ap.add_argument("--rounds", type=int, default=50)
ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test")
args = ap.parse_args()

db = f"latchkey_revprop_{os.getpid()}"
admin = args.pg
base = admin.rsplit("/", 1)[0]
url = f"{base}/{db}"
subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {db}"], check=True)
env = dict(os.environ, LATCHKEY_MASTER_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))
procs = []

def node(port, issuer):
    p = subprocess.Popen([args.bin, "serve", "--database-url", url, "--listen", f"127.0.0.1:{port}", "--issuer", issuer],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    for line in p.stdout:
        if line.startswith("listening on"):
            return
    sys.exit("node did not start")

def cli(*a, stdin=None):
    out = subprocess.run([args.bin, *a, "--database-url", url, "--json"], env=env, input=stdin, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

try:
    A, B = "http://127.0.0.1:18201", "http://127.0.0.1:18202"
    node(18201, A)
    node(18202, A)
    cli("user", "create", "--username", "alice", "--password-stdin", stdin="correct horse battery\n")
    c = cli("client", "create", "--name", "app", "--redirect-uri", "https://app.example/cb")
    auth = "Basic " + base64.b64encode(f"{c['client_id']}:{c['client_secret']}".encode()).decode()

    jar = http.cookiejar.CookieJar()
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def open_(req):
        try:
            return browser.open(req)
        except urllib.error.HTTPError as e:
            return e

    def form_fields(page):
        return {m.group(1): html.unescape(m.group(2)) for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}

    def code_flow():
        verifier = secrets.token_urlsafe(40)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        q = urllib.parse.urlencode({"response_type": "code", "client_id": c["client_id"], "redirect_uri": "https://app.example/cb",
                                    "scope": "openid", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"})
        r = open_(f"{A}/authorize?{q}")
        page = r.read().decode()
        if 'action="/login"' in page:
            f = form_fields(page) | {"username": "alice", "password": "correct horse battery"}
            r = open_(urllib.request.Request(f"{A}/login", data=urllib.parse.urlencode(f).encode()))
            r = open_(r.headers["Location"])
            page = r.read().decode()
        if 'action="/consent"' in page:
            f = form_fields(page) | {"decision": "allow"}
            r = open_(urllib.request.Request(f"{A}/consent", data=urllib.parse.urlencode(f).encode()))
        code = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["Location"]).query)["code"][0]
        return post(A, "/token", {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example/cb", "code_verifier": verifier})

    def post(node_url, path, data):
        req = urllib.request.Request(node_url + path, data=urllib.parse.urlencode(data).encode(),
                                     headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req) as r:
            body = r.read()
            return json.loads(body) if body else {}

    delays, first_try = [], 0
    for _ in range(args.rounds):
        tokens = code_flow()
        assert post(B, "/introspect", {"token": tokens["access_token"]})["active"] is True
        post(A, "/revoke", {"token": tokens["refresh_token"]})
        t0 = time.perf_counter()
        tries = 0
        while True:
            tries += 1
            if post(B, "/introspect", {"token": tokens["access_token"]})["active"] is False:
                break
        delays.append((time.perf_counter() - t0) * 1000)
        first_try += tries == 1
    delays.sort()
    print(f"rounds: {args.rounds}; inactive at B on the first introspection after A's revoke returned: {first_try}/{args.rounds}")
    print(f"delay from A's 200 to B's active:false, ms: median {statistics.median(delays):.2f}, "
          f"p95 {delays[int(len(delays) * 0.95) - 1]:.2f}, max {delays[-1]:.2f} (includes one introspection round trip)")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE {db} WITH (FORCE)"])
