"""Browser sign-in through Envoy, in headless Chromium, against `make run`'s stack."""

import unittest

from browser import Browser
from stack import Stack


class SignInFlow(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def setUp(self):
        self.browser = Browser()

    def tearDown(self):
        self.browser.close()

    def test_api_navigation_without_a_token_gets_the_json_401(self):
        b = self.browser
        b.get(self.stack.envoy + "/api/hello")
        self.assertEqual(b.document_statuses()[-1][0], 401, b.text())
        self.assertIn('"error_description"', b.text())


if __name__ == "__main__":
    unittest.main()
