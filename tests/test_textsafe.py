from iped.textsafe import escape_controls


def test_plain_text_is_unchanged() -> None:
    assert escape_controls("allow_all 0.0.1 /usr/bin/é") == "allow_all 0.0.1 /usr/bin/é"


def test_controls_are_escaped() -> None:
    assert escape_controls("a\x1b[31mb\r\x07\x7f\x9b") == "a\\x1b[31mb\\x0d\\x07\\x7f\\x9b"


def test_undecodable_bytes_show_as_their_byte() -> None:
    name = b"bad\xff\xfe".decode("utf-8", "surrogateescape")
    assert escape_controls(name) == "bad\\xff\\xfe"


def test_tab_and_newline_are_escaped_too() -> None:
    # one record, one line: a newline in a name must not start a forged line
    assert escape_controls("x\ny\tz") == "x\\x0ay\\x09z"
