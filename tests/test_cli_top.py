"""`execgw tail` and `execgw top` against a missing gateway, and `top` in a
pseudo-terminal against a real one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.durability_helpers import free_port, run_cli
else:
    from durability_helpers import free_port, run_cli


def test_tail_without_a_gateway_says_connecting_and_gives_up_with_exit_4() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run_cli("tail", "--target", target, "--give-up-after", "1", timeout=20)
    assert result.returncode == 4, result.stderr
    assert f"connecting to {target}" in result.stderr
    assert "gave up" in result.stderr
    assert "Traceback" not in result.stderr
