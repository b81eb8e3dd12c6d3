"""What a gateway loads at start: a paper or dry-run gateway never loads the kiteconnect
package, whose ticker module imports Twisted and installs its reactor (~0.3 s of every
start, and a second event loop's machinery in an asyncio process)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_server_loads_neither_kiteconnect_nor_twisted() -> None:
    probe = (
        "import sys\n"
        "import execgw.server.app, execgw.server.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kiteconnect', 'twisted')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
