"""The round trip's tagged message, reading its tags back, and hop delays from Received."""

from __future__ import annotations

import email.utils
import uuid

from mail_exporter.roundtrip.message import (
    ROUTE_HEADER,
    SENT_HEADER,
    TOKEN_HEADER,
    build_message,
    hop_delays,
    new_token,
    parse_tagged,
)

SENT = 1_795_000_000.25


def received(by: str, moment: float, comment: str = "") -> str:
    return f"from client by {by} with ESMTPSA id X;\r\n\t{email.utils.formatdate(moment)}{comment}"


def test_the_message_carries_token_route_and_send_time() -> None:
    token = new_token()
    assert uuid.UUID(token).version == 4
    message = build_message("loop", "probe@example.com", "box@example.org", token, SENT)
    assert message[TOKEN_HEADER] == token
    assert message["Message-ID"] == f"<{token}@example.com>"
    assert message[ROUTE_HEADER] == "loop"
    assert message[SENT_HEADER] == "1795000000.250000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == int(SENT)
    tagged = parse_tagged(bytes(message))
    assert tagged is not None
    assert (tagged.token, tagged.route, tagged.sent, tagged.received) == (token, "loop", SENT, ())


def test_reading_back_only_what_is_ours() -> None:
    assert parse_tagged(b"Subject: someone else's\r\n\r\n") is None
    header = f"{TOKEN_HEADER}: abc\r\n{SENT_HEADER}: soon\r\nReceived: by a; x\r\n\r\n"
    tagged = parse_tagged(header.encode())
    assert tagged is not None
    assert (tagged.route, tagged.sent, tagged.received) == ("", None, ("by a; x",))


def test_hop_delays_run_oldest_first_and_never_go_negative() -> None:
    sent = 1_795_000_000.0
    headers = [  # newest first, as in a message
        received("mx2", sent + 7, " (UTC)"),
        received("mx1", sent + 2),
        received("submission", sent - 1),  # whole seconds, and a clock a little behind
    ]
    assert hop_delays(sent, headers) == {"1": 0.0, "2": 2.0, "3": 5.0}


def test_hops_past_five_add_to_the_last_and_bad_dates_are_skipped() -> None:
    headers = [received(f"hop{n}", SENT + n) for n in range(7, 0, -1)]
    headers.insert(3, "from nowhere by broken; not a date")
    headers.append("no semicolon at all")
    assert hop_delays(SENT - 0.25, headers) == {
        "1": 1.0,
        "2": 1.0,
        "3": 1.0,
        "4": 1.0,
        "5": 3.0,  # hops 5, 6 and 7
    }
