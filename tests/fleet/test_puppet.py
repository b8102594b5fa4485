"""docs/fleet.md's Puppet resources, run masterless (``puppet apply``, Debian's puppet-agent)
against a real ``iped daemon`` on the emulator: ``validate_cmd`` refuses what the kernel would,
the ``exec`` converges through the daemon (exit 0 or 9), and a second apply changes nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from iped.pkcs7 import sign_policy
from tests.helpers.ansible import IPED
from tests.helpers.daemon import DaemonProc, tampered_signature
from tests.helpers.policies import policy_text

PUPPET = shutil.which("puppet")
if PUPPET is None:  # packaging/dev.sh installs Debian's puppet-agent
    pytest.fail("puppet is not installed: run packaging/dev.sh setup", pytrace=False)


def manifest(policies: Path, config: Path, source: Path, name: str) -> str:
    """The doc's resources, with this site's paths and the iped under test."""
    return f"""
file {{ '{policies}/{name}':
  ensure       => file,
  source       => '{source}',
  mode         => '0644',
  validate_cmd => '{IPED} validate --require-signed %',
  notify       => Exec['iped converge'],
}}

file {{ '{config}':
  ensure       => file,
  content      => file('{config}'),
  validate_cmd => '{IPED} check-config --relative-to {config.parent} %',
  notify       => Exec['iped converge'],
}}

exec {{ 'iped converge':
  command     => '{IPED} reload --config {config}',
  refreshonly => true,
  returns     => [0, 9],
}}
"""


def puppet_apply(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``puppet apply --detailed-exitcodes`` (0 no change, 2 changes, 4/6 failures), its state
    under ``tmp`` (nothing in /etc/puppet or /var/lib/puppet)."""
    assert PUPPET is not None
    path = tmp / "site.pp"
    path.write_text(text)
    work = tmp / "puppet"
    return subprocess.run([PUPPET, "apply", "--detailed-exitcodes", "--color=false", f"--confdir={work}/conf",
                           f"--vardir={work}/var", f"--codedir={work}/code", f"--logdir={work}/log",
                           f"--rundir={work}/run", str(path)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_masterless_puppet_places_validates_and_converges(quiet_daemon: DaemonProc, tmp_path: Path) -> None:
    site = quiet_daemon.site
    good = tmp_path / "base.p7s"
    good.write_bytes(sign_policy(policy_text("base", "1.1.0"), site.key.read_bytes(), site.cert.read_bytes()))
    (site.policies / "base.pol").unlink()  # the signed file declares base from now on
    first = puppet_apply(tmp_path, manifest(site.policies, site.config, good, "base.p7s"))
    assert first.returncode == 2, first.stdout + first.stderr
    assert "Exec[iped converge]" in first.stdout
    st = quiet_daemon.status()
    assert st["active"]["version"] == "1.1.0" and st["in_sync"], st["drift"]

    again = puppet_apply(tmp_path, manifest(site.policies, site.config, good, "base.p7s"))
    assert again.returncode == 0, again.stdout + again.stderr

    bad = tmp_path / "tampered.p7s"
    bad.write_bytes(tampered_signature(site))
    refused = puppet_apply(tmp_path, manifest(site.policies, site.config, bad, "tampered.p7s"))
    assert refused.returncode in (4, 6), refused.stdout + refused.stderr
    assert "validate" in (refused.stdout + refused.stderr).lower()
    assert not (site.policies / "tampered.p7s").exists()
    assert quiet_daemon.status()["active"]["version"] == "1.1.0"
