"""Which snapshot paths mean something: a path no registered policy models is a typo, not a gap.

A snapshot row names state (``vcpu0.pkrs``, ``vcpu1.vmcs01.exit_ctls.load_pkrs``, ``host.pkrs``).
A policy that lacks the state reports it "not modelled" and skips the row, which is right when
another policy models it (the bare CPU has no VMCS) and silently wrong when nobody does
(``vcpu0.pkr``).  The model is the only catalogue of paths: a path is known when at least one
registered policy's freshly built machine answers it for vCPU 0 (any vCPU index is asked as 0;
whether that vCPU exists is a separate check, :class:`VcpuTracker`).
"""

from __future__ import annotations

from functools import lru_cache

from reference_model.machine import SNAPSHOT_PATH


@lru_cache(maxsize=4096)
def known_snapshot_path(path: str) -> bool:
    """True when some registered policy models ``path`` (vCPU index aside)."""
    from reference_model.policies import POLICIES

    m = SNAPSHOT_PATH.match(path)
    if m is None:
        return False
    probe = path if m.group(1) is None else f"vcpu0.{m.group(2)}"
    for policy in POLICIES.values():
        machine = policy.build()
        try:
            machine.snapshot(probe)
        except KeyError:
            continue
        except Exception:
            return True
        return True
    return False


def snapshot_vcpu(path: str) -> int | None:
    """The vCPU index a path names (None for ``host.*``)."""
    m = SNAPSHOT_PATH.match(path)
    return int(m.group(1)) if m is not None and m.group(1) is not None else None


class VcpuTracker:
    """Across a trace's rows in order: the vCPUs some event has run on so far.

    A snapshot of a vCPU no earlier event touched would read state the model invents on the spot
    (PKRS 0), so it is bad input, not a result.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def event(self, vcpu: int) -> None:
        self.seen.add(vcpu)

    def missing(self, path: str) -> int | None:
        """The vCPU ``path`` names if no event has run on it yet, else None."""
        v = snapshot_vcpu(path)
        return v if v is not None and v not in self.seen else None
