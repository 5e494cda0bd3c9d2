"""`make run`'s stack for the browser tests: scripts/lib.sh `start_stack`
on free 127.0.0.1 ports, in a temporary run directory, stopped by pid.

The stack is the one `make run` starts (auth service with the development
outbox, echo backend, Envoy with envoy/local.yaml and the built filter);
only the ports, the data directory and the binaries' directory differ
(lib.sh's AUTHFLOW_RUN_* knobs), so it runs beside another `make run`.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT_SECS = 90
HTTP_TIMEOUT_SECS = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def totp_now(secret):
    """The current RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret, as an authenticator app shows it."""
    key = base64.b32decode(secret.replace(" ", "").upper() + "=" * (-len(secret.replace(" ", "")) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000)


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method, url, headers=None, body=None):
    """One request, redirects not followed; any status is returned, not raised."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _opener.open(req, timeout=HTTP_TIMEOUT_SECS) as r:
            return Reply(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read().decode())


class Stack:
    """Started by `start()`, stopped by `stop()` (or as a context manager)."""

    def __init__(self, extra_env=None):
        self.ports = {name: free_port() for name in ("envoy", "admin", "auth", "echo")}
        self.envoy = f"http://127.0.0.1:{self.ports['envoy']}"
        self.auth = f"http://127.0.0.1:{self.ports['auth']}"
        self.admin_api = f"http://127.0.0.1:{self.ports['admin']}"
        self.run_dir = tempfile.mkdtemp(prefix="authflow-browser-run-")
        self.extra_env = dict(extra_env or {})
        self.proc = None
        self.pids = []
        self.passwords = {}
        self._seen_mail = set()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update({
            "AUTHFLOW_RUN_DIR": self.run_dir,
            "AUTHFLOW_RUN_BIN_DIR": os.environ.get("AUTHFLOW_RUN_BIN_DIR", os.path.join(ROOT, "target", "debug")),
            "AUTHFLOW_RUN_ENVOY_PORT": str(self.ports["envoy"]),
            "AUTHFLOW_RUN_ADMIN_PORT": str(self.ports["admin"]),
            "AUTHFLOW_RUN_AUTH_PORT": str(self.ports["auth"]),
            "AUTHFLOW_RUN_ECHO_PORT": str(self.ports["echo"]),
        })
        # start_stack, then one line with what the test needs; the shell then
        # waits on its children, and its EXIT trap stops them when it is told to.
        script = (
            'source scripts/lib.sh && start_stack && '
            'echo "READY $DEMO_PASSWORD $ADMIN_PASSWORD ${PIDS[*]}" && wait "${PIDS[@]}"'
        )
        self.proc = subprocess.Popen(
            ["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECS
        output = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("READY "):
                demo, admin, *pids = line.split()[1:]
                self.passwords = {"demo@authflow.local": demo, "admin@authflow.local": admin}
                self.pids = [int(p) for p in pids]
                return
        self.stop()
        raise RuntimeError("the stack did not start:\n" + "".join(output) + self.logs())

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # The shell's trap stops its children; whatever survived it is stopped here, by pid.
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdout.close()
        self.proc = None
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def logs(self):
        out = []
        for name in ("auth.log", "envoy.log", "echo.log"):
            path = os.path.join(self.run_dir, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append(f"--- {name} (last lines)\n" + "".join(f.readlines()[-30:]))
        return "\n".join(out)

    # --- the auth service, directly (as the demo does) -------------------------------------

    def mail(self, to, subject, timeout=10):
        """The newest mail to `to` whose subject contains `subject` and that no earlier call returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = http("GET", f"{self.auth}/v1/dev/outbox?to={urllib.parse.quote(to)}")
            if r.status == 200:
                for m in reversed(r.json()):
                    key = (m.get("subject"), m.get("sent_at"), m.get("code"), m.get("token"))
                    if subject in m.get("subject", "") and key not in self._seen_mail:
                        self._seen_mail.add(key)
                        return m
            time.sleep(0.2)
        raise AssertionError(f"no new '{subject}' mail for {to} in the outbox")

    def verification_path(self, to):
        """The path + query of the link in the newest verification mail to `to`."""
        m = self.mail(to, "erif")
        link = re.search(r"(/auth/verify\?token=[A-Za-z0-9_\-.~%]+)", m.get("body", ""))
        if link:
            return link.group(1)
        return "/auth/verify?token=" + urllib.parse.quote(m["token"])

    def sign_in_api(self, email, password):
        """Signs in through Envoy's JSON API (password, then the mailed code); returns the session."""
        headers = {"user-agent": "authflow-browser-test", "accept-language": "en"}
        r = http("POST", f"{self.envoy}/v1/auth/signin", headers, {"email": email, "password": password})
        assert r.status == 200, f"signin {email}: {r.status} {r.body}"
        challenge = r.json()["challenge_id"]
        code = self.mail(email, "sign-in code")["code"]
        r = http("POST", f"{self.envoy}/v1/auth/signin/verify", headers, {"challenge_id": challenge, "code": code})
        assert r.status == 200, f"signin/verify {email}: {r.status} {r.body}"
        session = r.json()
        session["headers"] = {**headers, "authorization": f"Bearer {session['access_token']}",
                              "x-authflow-device": session["device_secret"]}
        return session

    def ban(self, email):
        """An admin bans `email` through Envoy's admin API (as scripts/demo.sh does)."""
        admin = self.sign_in_api("admin@authflow.local", self.passwords["admin@authflow.local"])
        q = urllib.parse.quote(email)
        r = http("GET", f"{self.envoy}/v1/admin/users?email={q}", admin["headers"])
        assert r.status == 200, f"admin users: {r.status} {r.body}"
        user_id = r.json()[0]["user_id"]
        r = http("POST", f"{self.envoy}/v1/admin/users/{user_id}/ban", admin["headers"])
        assert r.status in (200, 204), f"ban: {r.status} {r.body}"
