"""examples/python/watch.py runs and prints the scenes it promises."""
from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class ExampleTest(unittest.TestCase):
    def test_watch(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "bindings" / "python"))
        r = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "watch.py")],
                           env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertIn("batch #1 (snapshot)", out)
        self.assertIn("carol  dnd", out)
        self.assertIn("bob    offline", out)
        self.assertIn("alice  offline", out)
        self.assertIn("at the end:", out)


if __name__ == "__main__":
    unittest.main()
