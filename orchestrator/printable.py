"""Text from elsewhere (a container's output, a machine's metrics, an error a remote command printed)
made safe for the user's terminal.

A terminal acts on escape sequences: OSC sets the window title, writes the clipboard (OSC 52) or
makes hyperlinks, CSI moves the cursor and rewrites what was printed, DCS talks to the terminal
itself. A compromised or careless machine must not get to do any of that on the laptop. Plain
lines (the trainer's own) pass unchanged; sequences are removed whole, other control characters
(C0 but tab and newline, DEL, C1) are dropped.
"""
from __future__ import annotations

import re

_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"                  # CSI: colours, cursor movement, erase
    r"|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"    # OSC: title, clipboard, hyperlinks (to BEL or ST)
    r"|\x1b[PX^_][^\x1b\n]*(?:\x1b\\)?"         # DCS, SOS, PM, APC (to ST)
    r"|\x1b[ -/]*[0-~]?"                         # any other escape, and a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"                    # the same as 8-bit C1 codes: CSI,
    r"|\x9d[^\x07\x9c\n]*[\x07\x9c]?"             # OSC,
    r"|[\x90\x98\x9e\x9f][^\x9c\n]*\x9c?"          # DCS, SOS, PM, APC (an unended one stops at the line's end,
                                                 # so it can't swallow the orch advice that follows it)
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without terminal control sequences or control characters (tab and newline kept)."""
    if text.isprintable():  # the common case: nothing to look for
        return text
    text = _SEQUENCES.sub("", text)
    if "\r" in text:  # a progress bar's redraws: a terminal would leave the last one
        text = "\n".join(line.rstrip("\r").rpartition("\r")[2] for line in text.split("\n"))
    return _CONTROLS.sub("", text)
