"""Browser sign-in through Envoy, in headless Chromium, against `make run`'s stack:
the filter's redirect, the auth service's pages and cookies, a silent refresh,
logout, a ban, TOTP enrolment — with no Content-Security-Policy violation.

Screenshots of each page go to target/browser-screenshots/, or to
AUTHFLOW_SCREENSHOTS (`make browser-screenshots` writes docs/screenshots/)."""

import time
import unittest
import urllib.parse

from browser import Browser
from stack import Stack, totp_now

# Short access tokens, so the silent refresh is seen within seconds (the
# cookie's Max-Age is the token's lifetime: the browser drops it).
ACCESS_TTL_SECS = 20
PASSWORD = "a-long-browser-passphrase-1"
APP = "/app/hello"


class SignInFlow(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack({"AUTHFLOW_TOKENS__ACCESS_TTL_SECS": str(ACCESS_TTL_SECS)})
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def new_browser(self):
        b = Browser()
        self.addCleanup(b.close)
        return b

    def assert_no_csp_violation(self, b):
        self.assertEqual(b.csp_violations(), [], "the pages broke their own Content-Security-Policy")

    def assert_on_signin(self, b, return_to=APP):
        b.wait_path("/auth/signin")
        self.assertEqual(b.query().get("return_to"), [return_to], b.path)
        b.wait_for("form#signin-form")

    def sign_in(self, b, email, password, shots=False):
        """From the sign-in page: password, then the mailed code; ends where return_to said."""
        b.fill_and_submit("signin-form", {"email": email, "password": password})
        b.wait_path("/auth/signin/code")
        if shots:
            b.screenshot("05-code")
        code = self.stack.mail(email, "sign-in code")["code"]
        b.fill_and_submit("code-form", {"code": code})

    def test_api_navigation_without_a_token_gets_the_json_401(self):
        # Only routes marked browser_redirect send browsers to sign in; an API keeps RFC 6750.
        b = self.new_browser()
        b.get(self.stack.envoy + "/api/hello")
        self.assertEqual(b.document_statuses()[-1][0], 401, b.text())
        self.assertIn('"error_description"', b.text())

    def test_the_csp_check_sees_a_violation(self):
        # The other tests assert no CSP violation in the console: this shows one would be seen.
        b = self.new_browser()
        b.get(self.stack.envoy + "/auth/signin")
        b.driver.execute_script(
            "const i = document.createElement('img'); i.src = 'http://192.0.2.1/x.png'; document.body.append(i);"
        )
        deadline = time.monotonic() + 5
        while not b.csp_violations() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue(b.csp_violations(), "an image from another origin broke img-src, unseen")

    def test_sign_up_sign_in_refresh_devices_logout(self):
        s, b = self.stack, self.new_browser()
        email = "ada@example.com"

        # A protected page without a token: the filter's 302 to the refresh endpoint, which
        # (no refresh cookie) sends the browser on to sign in, carrying where to come back to.
        b.get(s.envoy + APP)
        self.assert_on_signin(b)
        statuses = b.document_statuses()
        self.assertEqual(statuses[0][0], 302, statuses)
        self.assertTrue(urllib.parse.urlsplit(statuses[0][1]).path == APP, statuses)
        b.screenshot("01-signin")

        b.click_link("/auth/signup")
        b.wait_path("/auth/signup")
        b.screenshot("02-signup")
        b.fill_and_submit("signup-form", {"email": email, "password": PASSWORD})
        b.screenshot("03-check-your-mail")

        # Opening the link confirms nothing (mail scanners open links); its button does.
        b.get(s.envoy + s.verification_path(email))
        self.assertIn("confirm your address", b.h1().lower())
        b.fill_and_submit("verify-form", {})
        self.assertIn("confirmed", b.h1().lower())
        b.screenshot("04-verified")

        b.get(s.envoy + APP)
        self.assert_on_signin(b)
        self.sign_in(b, email, PASSWORD, shots=True)
        b.wait_path(APP)
        user = b.wait_for("#x-auth-user").text
        self.assertTrue(user)
        b.screenshot("06-signed-in")

        # TOTP enrolment shows a QR code (inline, CSP-safe) and the secret.
        b.get(s.envoy + "/auth/totp")
        b.fill_and_submit("totp-password-form", {"password": PASSWORD})
        b.wait_for("form#totp-form")
        self.assertTrue(b.has("figure#totp-qr svg"), "no QR code on the TOTP page")
        b.screenshot("07-totp")
        secret = b.wait_for("code#totp-secret").text
        b.fill_and_submit("totp-form", {"code": totp_now(secret)})
        b.wait_path("/auth/totp/done")

        # The access cookie expires: the next navigation goes through the refresh endpoint
        # and comes back to the page, never showing the sign-in page.
        time.sleep(ACCESS_TTL_SECS + 1)
        b.document_statuses()
        b.get(s.envoy + APP)
        b.wait_path(APP)
        self.assertEqual(b.wait_for("#x-auth-user").text, user)
        visited = [urllib.parse.urlsplit(url).path for _, url in b.document_statuses()]
        self.assertIn("/auth/refresh", visited)
        self.assertNotIn("/auth/signin", visited)

        # "Your devices": this browser's session, and log out.
        b.get(s.envoy + "/auth/devices")
        b.wait_for("form#logout-form")
        b.screenshot("08-devices")
        b.submit("logout-form")
        b.wait_path("/auth/signin")

        b.get(s.envoy + APP)
        self.assert_on_signin(b)
        self.assert_no_csp_violation(b)

    def test_a_banned_user_is_sent_to_sign_in_on_the_next_navigation(self):
        s, b = self.stack, self.new_browser()
        email = "demo@authflow.local"
        b.get(s.envoy + APP)
        self.assert_on_signin(b)
        self.sign_in(b, email, s.passwords[email])
        b.wait_path(APP)
        b.wait_for("#x-auth-user")

        s.ban(email)
        # The filter learns the ban from the revocation feed within about a second.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            b.get(s.envoy + APP)
            if b.path.startswith("/auth/signin"):
                break
            time.sleep(0.5)
        self.assert_on_signin(b)
        self.assert_no_csp_violation(b)


if __name__ == "__main__":
    unittest.main()
