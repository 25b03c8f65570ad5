"""The loader, the struct layouts, and installing with pip."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import presence
from presence import _lib

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent


def run_python(code: str, env: dict, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


class LoaderTest(unittest.TestCase):
    def test_bad_path_says_where(self) -> None:
        env = dict(os.environ, PRESENCE_LIBRARY="/nonexistent/libpresence.so",
                   PYTHONPATH=str(PACKAGE_ROOT))
        r = run_python("import presence\ntry:\n presence.Engine()\n"
                       "except presence.LibraryNotFoundError as e:\n print(e)\n", env, "/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("PRESENCE_LIBRARY (/nonexistent/libpresence.so)", r.stdout)

    def test_search_lists_every_place(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PRESENCE_LIBRARY"}
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
        r = run_python("from presence import _lib\n"
                       "_lib._candidates = lambda: [('next to the package', '/nowhere/x.so')]\n"
                       "import ctypes.util\nctypes.util.find_library = lambda n: None\n"
                       "try:\n _lib.load()\nexcept _lib.LibraryNotFoundError as e:\n print(e)\n",
                       env, "/")
        self.assertEqual(r.returncode, 0, r.stderr)
        for text in ("PRESENCE_LIBRARY: not set", "next to the package: /nowhere/x.so",
                     "the system paths", "set PRESENCE_LIBRARY"):
            self.assertIn(text, r.stdout)

    def test_not_a_presence_library(self) -> None:
        libc = ctypes.util.find_library("c")
        with self.assertRaises(_lib.LibraryNotFoundError) as cm:
            _lib.find_and_open(libc)
        self.assertIn("not a libpresence", str(cm.exception))

    def test_layouts_match_c_h(self) -> None:
        # x86-64 and aarch64 (LP64): the sizes presence/c.h implies.
        if ctypes.sizeof(ctypes.c_void_p) != 8:
            self.skipTest("LP64 only")
        self.assertEqual(ctypes.sizeof(_lib.presence_signal_t), 88)
        self.assertEqual(_lib.presence_signal_t.platform.offset, 72)
        self.assertEqual(ctypes.sizeof(_lib.presence_bytes_t), 16)
        self.assertEqual(ctypes.sizeof(_lib.presence_batch_result_t), 32)
        self.assertEqual(ctypes.sizeof(_lib.presence_override_t), 32)
        self.assertEqual(ctypes.sizeof(_lib.presence_user_presence_t), 88)
        self.assertEqual(ctypes.sizeof(_lib.presence_engine_options_t), 224)
        # Version 2's fields start after version 1's (in its tail padding),
        # version 3's after version 2's (184: the size version 2 had).
        self.assertEqual(_lib.presence_engine_options_t.max_signals_per_device_per_sec.offset,
                         132)
        self.assertEqual(_lib.presence_engine_options_t.prober.offset, 184)
        self.assertEqual(ctypes.sizeof(_lib.presence_transition_t), 48)
        self.assertEqual(ctypes.sizeof(_lib.presence_device_transition_t), 24)
        self.assertEqual(_lib.presence_device_transition_t.event.offset, 16)
        self.assertEqual(ctypes.sizeof(_lib.presence_state_durations_t), 32)
        self.assertEqual(ctypes.sizeof(_lib.presence_fanout_options_t), 128)
        self.assertEqual(ctypes.sizeof(_lib.presence_subscriber_options_t), 48)
        # The defaults that presence_*_options_init writes are those of c.h.
        o = _lib.presence_engine_options_t()
        _lib.load().presence_engine_options_init(ctypes.byref(o), 1)
        self.assertEqual((o.app_interval_ms, o.min_dwell_ms, o.max_overrides_per_user,
                          o.override_requires_live_device), (1000, 1000, 16, 1))
        self.assertEqual(o.max_signals_per_device_per_sec, 0)  # not version 1's to write
        _lib.load().presence_engine_options_init(ctypes.byref(o), 2)
        self.assertEqual((o.version, o.max_signals_per_device_per_sec, o.store,
                          o.memory_budget_bytes, o.file_dir, o.file_sync_interval_ms,
                          o.file_sync), (2, 20, 1, 0, None, 100, 1))
        self.assertEqual(o.max_probes, 0)  # not version 2's to write
        _lib.load().presence_engine_options_init(ctypes.byref(o), 3)
        self.assertEqual((o.version, o.probe_margin_ms, o.probe_retry_ms, o.max_probes,
                          o.max_probes_per_gateway_per_sec), (3, 1000, 500, 4, 1000))


class InstallTest(unittest.TestCase):
    def test_pip_install_without_network(self) -> None:
        with tempfile.TemporaryDirectory() as target:
            r = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                 "--no-index", "--disable-pip-version-check", "--quiet", "--target", target,
                 str(PACKAGE_ROOT)], capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertTrue((Path(target) / "presence" / "py.typed").is_file())
            env = dict(os.environ, PYTHONPATH=target)
            r = run_python("import presence\nprint(presence.__file__)\n"
                           "print(presence.Engine().now_ms() > 0)\n", env, target)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith(target), r.stdout)
            self.assertIn("True", r.stdout)


if __name__ == "__main__":
    unittest.main()
