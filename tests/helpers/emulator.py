"""An emulator that trusts the tests' signer, and loading signed policies into it."""

from __future__ import annotations

from iped.emulator import Emulator
from iped.emulator.types import KernelConfig
from tests.helpers.certs import sign, signer
from tests.helpers.policies import ALLOW, policy_text


def make_emulator(abi: str = "7.0", config: KernelConfig | None = None) -> Emulator:
    emu = Emulator(abi=abi, config=config or KernelConfig())
    emu.trust(signer()[0])
    return emu


def load(emu: Emulator, name: str = "p", version: str = "0.0.1", *rules: str, default: str = ALLOW) -> bytes:
    """Sign ``policy_text(name, version, *rules)`` and write it to ``new_policy``; the blob."""
    blob = sign(policy_text(name, version, *rules, default=default))
    assert emu.write("new_policy", blob) == len(blob)
    return blob
