"""DPoP (RFC 9449) from the browser: the service's own client script
(/auth/static/authflow-dpop.js) signs in with a non-extractable WebCrypto key,
calls a protected API through Envoy with `Authorization: DPoP` and refreshes
its tokens with proofs from the same key."""

import json
import unittest

from browser import Browser
from stack import Stack

MODULE = "/auth/static/authflow-dpop.js"
EMAIL = "demo@authflow.local"


class DpopInTheBrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def setUp(self):
        self.browser = Browser()
        self.addCleanup(self.browser.close)

    def run_js(self, body, *args):
        """Runs `body` (an async function body that sees `dpop`, the module, and `args`) in the page."""
        script = (
            "const done = arguments[arguments.length - 1];"
            "const args = Array.from(arguments).slice(0, -1);"
            f"import({json.dumps(MODULE)}).then(async (dpop) => {{ {body} }})"
            ".then((v) => done({ok: v === undefined ? null : v}), (e) => done({error: String(e)}));"
        )
        out = self.browser.driver.execute_async_script(script, *args)
        self.assertNotIn("error", out, out)
        return out["ok"]

    def fetch(self, path, headers):
        """A plain fetch from the page with exactly these headers: (status, WWW-Authenticate, body)."""
        return self.run_js(
            "const r = await fetch(args[0], {headers: args[1], credentials: 'same-origin'});"
            "return [r.status, r.headers.get('www-authenticate'), await r.text()];",
            path, headers,
        )

    def test_proofs_made_at_once_share_one_key(self):
        # A page's first requests, made together before any key exists, must not each make
        # and store a key of their own: a token bound to one would stop working once another
        # replaced it in storage.
        self.browser.get(self.stack.envoy + "/auth/signin")
        keys = self.run_js(
            "await dpop.forgetKey();"
            "const proofs = await Promise.all([1, 2, 3].map(() => dpop.proof('GET', '/api/hello')));"
            "const stored = await dpop.proofKey();"
            "const {x, y} = await crypto.subtle.exportKey('jwk', stored.publicKey);"
            "const header = (p) => JSON.parse(atob(p.split('.')[0].replace(/-/g, '+').replace(/_/g, '/')));"
            "return proofs.map((p) => header(p).jwk.x === x && header(p).jwk.y === y);"
        )
        self.assertEqual(keys, [True, True, True])

    def test_a_non_extractable_key_binds_the_token_and_only_fresh_proofs_pass(self):
        s, b = self.stack, self.browser
        # A page of the service, under its Content-Security-Policy: the module loads from 'self'.
        b.get(s.envoy + "/auth/signin")
        password = s.passwords[EMAIL]

        challenge = self.run_js("return dpop.startSignIn(args[0], args[1]);", EMAIL, password)
        code = s.mail(EMAIL, "sign-in code")["code"]
        session = self.run_js("return dpop.completeSignIn(args[0], args[1], {issuer: args[2]});", challenge, code, s.auth)
        self.assertEqual(session["token_type"], "DPoP", session)
        token = session["access_token"]

        # The private key never leaves WebCrypto: exporting it fails, in any format.
        key = self.run_js(
            "const pair = await dpop.proofKey(); const out = {extractable: pair.privateKey.extractable};"
            "for (const f of ['jwk', 'pkcs8']) {"
            "  try { await crypto.subtle.exportKey(f, pair.privateKey); out[f] = 'exported'; }"
            "  catch (e) { out[f] = e.name; } }"
            "return out;"
        )
        self.assertEqual(key, {"extractable": False, "jwk": "InvalidAccessError", "pkcs8": "InvalidAccessError"})

        # The bound token works through Envoy with a fresh proof per request.
        for _ in range(2):
            status, body = self.run_js(
                "const r = await dpop.fetchWithDpop('/api/hello', {}, args[0]); return [r.status, await r.text()];", token
            )
            self.assertEqual(status, 200, body)
            self.assertTrue(json.loads(body)["headers"].get("x-auth-user"), body)

        # The refresh token rotates with a proof from the same key; the new token is bound too.
        renewed = self.run_js("return dpop.refresh(args[0], {issuer: args[1]});", session["refresh_token"], s.auth)
        self.assertEqual(renewed["token_type"], "DPoP", renewed)
        status, body = self.run_js(
            "const r = await dpop.fetchWithDpop('/api/hello', {}, args[0]); return [r.status, await r.text()];",
            renewed["access_token"],
        )
        self.assertEqual(status, 200, body)

        # One proof, copied and sent again with the same token: the replay is refused.
        copied = self.run_js("return dpop.proof('GET', '/api/hello', args[0]);", token)
        dpop_headers = {"Authorization": f"DPoP {token}", "DPoP": copied}
        self.assertEqual(self.fetch("/api/hello", dpop_headers)[0], 200)
        status, challenge_header, _ = self.fetch("/api/hello", dpop_headers)
        self.assertEqual(status, 401)
        self.assertTrue(challenge_header.startswith('DPoP error="invalid_dpop_proof"'), challenge_header)

        # The same token as a Bearer token (a downgrade) is refused.
        status, challenge_header, _ = self.fetch("/api/hello", {"Authorization": f"Bearer {token}"})
        self.assertEqual(status, 401)
        self.assertIn("invalid_token", challenge_header)
        self.assertEqual(b.csp_violations(), [], "the module and its calls stay within the page's CSP")


if __name__ == "__main__":
    unittest.main()
