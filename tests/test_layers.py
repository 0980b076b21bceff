"""Which layer may import which: the models describe rows and know nothing of the email logic."""

from __future__ import annotations

import subprocess
import sys


def test_the_models_do_not_import_the_mail_logic():
    code = "import sys, portal.models; print(sorted(m for m in sys.modules if m.startswith('portal.mail')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
