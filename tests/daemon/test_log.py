"""JournalReporter speaks journald's native protocol itself (no systemd-python on the start path)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from iped.daemon import log


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's reading of one native-protocol datagram (journal-native.c)."""
    out: dict[str, str] = {}
    while datagram:
        line, _, rest = datagram.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            out[name.decode()] = value.decode()
            datagram = rest
        else:
            size = int.from_bytes(rest[:8], "little")
            out[line.decode()] = rest[8 : 8 + size].decode()
            assert rest[8 + size : 9 + size] == b"\n"
            datagram = rest[9 + size :]
    return out


@pytest.fixture
def journald(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    pytest.importorskip("systemd")
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setattr(log, "JOURNAL_SOCKET", str(path))
    return sock


def test_an_entry_carries_message_id_priority_and_the_callers_code(journald: socket.socket) -> None:
    log.JournalReporter().log("warning", "dm monitor gone")
    got = parse_native(journald.recv(65536))
    assert got["MESSAGE"] == "dm monitor gone"
    assert got["MESSAGE_ID"] == log.message_id("warning", None)
    assert got["PRIORITY"] == "4"
    assert got["SYSLOG_IDENTIFIER"] == "iped"
    assert got["CODE_FILE"].endswith("log.py") and got["CODE_FUNC"] == "log" and int(got["CODE_LINE"]) > 0


def test_a_value_with_a_newline_is_sent_length_prefixed() -> None:
    assert log._journal_field("A", "x=y") == b"A=x=y\n"
    assert log._journal_field("A", "one\ntwo") == b"A\n" + (7).to_bytes(8, "little") + b"one\ntwo\n"
    two = log._journal_field("A", "one\ntwo") + log._journal_field("B", "b")
    assert parse_native(two) == {"A": "one\ntwo", "B": "b"}


def test_a_refused_datagram_goes_through_systemd_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("systemd")
    monkeypatch.setattr(log, "JOURNAL_SOCKET", str(tmp_path / "none.sock"))  # nothing listens
    sent: list[tuple[str, dict[str, str]]] = []
    import systemd.journal

    monkeypatch.setattr(systemd.journal, "send", lambda message, **fields: sent.append((message, fields)))
    log.JournalReporter().log("info", "hello")
    assert sent and sent[0][0] == "hello" and sent[0][1]["PRIORITY"] == "6"
