"""`make run`'s stack (scripts/lib.sh `start_stack`) as another account on the same
host meets it: no browser needed. The run directory holds the processes' logs, which
carry whatever the services log (Envoy at debug level logs every request's headers:
bearer tokens, device secrets, cookies), so it is the owner's only; the
key-encryption key reaches only the process that uses it."""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from stack import ROOT, Stack, free_port


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(
            entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry
        )


class LocalStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def test_run_directory_and_logs_are_the_owners_only(self):
        run_dir = self.stack.run_dir
        paths = [run_dir] + [os.path.join(run_dir, n) for n in sorted(os.listdir(run_dir))]
        for path in paths:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            with self.subTest(path=path):
                self.assertEqual(mode & 0o077, 0, f"{path} has mode {mode:o}")

    def test_key_encryption_key_reaches_the_auth_service_only(self):
        auth, echo, envoy = self.stack.pids
        self.assertTrue(b"AUTHFLOW_KEK__KEY" in environ(auth), "the auth service needs it")
        for name, pid in (("echo backend", echo), ("Envoy", envoy)):
            with self.subTest(process=name):
                # (not assertNotIn: its message would print the environment, the key with it)
                self.assertFalse(b"AUTHFLOW_KEK__KEY" in environ(pid), f"{name} has the KEK in its environment")

    def test_admin_port_does_not_reconfigure_envoy(self):
        # Any account on the host reaches 127.0.0.1: on the local admin port it can stop Envoy
        # (/quitquitquit), turn the rate limits off (/runtime_modify) or switch its logging to
        # debug (/logging), which writes every request's bearer token and device secret to
        # envoy.log. The compose stack's admin port only reads (GET /ready, /stats, /clusters).
        # Asked here to set the level it already has, so nothing changes if it is obeyed.
        from stack import http

        r = http("POST", f"{self.stack.admin_api}/logging?level=warning")
        self.assertNotEqual(r.status, 200, "the local admin port reconfigured Envoy")
        self.assertEqual(http("GET", f"{self.stack.admin_api}/ready").status, 200)


class RunDirectory(unittest.TestCase):
    """start_stack makes the run directory anew: `rm -rf`, then a new directory. In between
    its name is free, and a temporary one (`make demo-test`'s `mktemp -d`, the browser
    tests') sits in /tmp, where any account may create it: one watching /tmp (inotify tells
    it the name as it is removed) wins the race, with files of its own waiting inside. The
    stack must refuse a directory it did not make, not write its key into the files there."""

    def test_a_run_directory_made_by_someone_else_is_refused(self):
        base = tempfile.mkdtemp(prefix="authflow-run-dir-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        run_dir, bin_dir = os.path.join(base, "run"), os.path.join(base, "bin")
        os.mkdir(run_dir, 0o700)
        os.mkdir(bin_dir)
        # A stand-in service: `kek generate` prints a key, `serve` ends at once.
        auth = os.path.join(bin_dir, "authflow-auth")
        with open(auth, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = kek ] && echo the-run-kek\nexit 0\n')
        os.chmod(auth, 0o755)
        # `rm` removes the directory, then the other account takes its name: a directory
        # open to all, with a `kek` file anyone may read.
        script = """
source scripts/lib.sh
rm() { command rm "$@"; (umask 0 && mkdir "$RUN_DIR" && : >"$RUN_DIR/kek"); }
wait_http() { return 1; }
start_stack
"""
        ports = {name: str(free_port()) for name in ("ENVOY", "ADMIN", "AUTH", "ECHO")}
        env = dict(os.environ, AUTHFLOW_RUN_DIR=run_dir, AUTHFLOW_RUN_BIN_DIR=bin_dir)
        env.update({f"AUTHFLOW_RUN_{name}_PORT": port for name, port in ports.items()})
        done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60)
        self.assertNotEqual(done.returncode, 0, "the stack went on in a directory it did not make")
        planted = os.path.join(run_dir, "kek")
        with open(planted, "rb") as f:
            self.assertFalse(b"the-run-kek" in f.read(), "the key went into another account's file")
