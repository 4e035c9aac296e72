"""The ports the local clusters and the tests' own servers take (``free_port_block``) are
reserved across processes: two test processes side by side (pytest-xdist) never get the
same ones, even while a server on them is down."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from taskloom.testing.cluster import free_port_block, release_ports
from tests.helpers import ROOT

HOLDER = textwrap.dedent(
    """
    import sys
    from taskloom.testing.cluster import free_port_block
    print(free_port_block(3), flush=True)
    sys.stdin.read()  # holds them until told to end
    """
)


def test_a_block_another_process_holds_is_not_handed_out() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        held = int(holder.stdout.readline())
        # Nothing listens on them (no server was started): only the reservation says no.
        mine = free_port_block(3)
        try:
            assert not set(range(mine, mine + 3)) & set(range(held, held + 3))
        finally:
            release_ports(range(mine, mine + 3))
    finally:
        holder.stdin.close()
        holder.wait(10)
