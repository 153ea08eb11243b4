"""The checklist a served poem shows: each constraint, whether it was asked for, and whether the
text meets it, computed from the poem's text by the checkers of
:mod:`rnnlab.generation.poetry` (never taken from the request)."""

from __future__ import annotations

from typing import Any

from rnnlab.generation.poetry import (
    check_form,
    found_keywords,
    match_tone_pattern,
    shared_rhyme_group,
    split_lines,
)
from rnnlab.serve.schemas import PoemRequest


def _strip(text: str) -> str:
    return "".join(split_lines(text))


def poem_checklist(text: str, req: PoemRequest) -> list[dict[str, Any]]:
    """``[{name, asked, ok, detail}]`` for form, acrostic, first line, start, keywords, rhyme
    and tones of ``text`` against ``req``."""
    lines = split_lines(text)
    form = check_form(text, req.form, req.lines)
    items = [
        {
            "name": "form",
            "asked": True,
            "ok": form,
            "detail": f"{req.lines} lines of {req.form} characters, ，/。, no line repeated",
        }
    ]
    if req.acrostic:
        heads = _strip(req.acrostic)
        got = "".join(line[:1] for line in lines)
        items.append(
            {"name": "acrostic", "asked": True, "ok": got == heads, "detail": f"heads {got}"}
        )
    if req.first_line:
        want = _strip(req.first_line)
        ok = bool(lines) and lines[0] == want
        items.append({"name": "first line", "asked": True, "ok": ok, "detail": want})
    if req.start:
        want = _strip(req.start)
        ok = "".join(lines).startswith(want)
        items.append({"name": "start", "asked": True, "ok": ok, "detail": want})
    if req.keywords:
        want = "".join(ch for ch in req.keywords if ch not in ",，、" and not ch.isspace())
        got = found_keywords(text, want)
        items.append(
            {"name": "keywords", "asked": True, "ok": got == want, "detail": f"found {got or '-'}"}
        )
    group = shared_rhyme_group(text)
    items.append(
        {
            "name": "rhyme",
            "asked": req.rhyme,
            "ok": group is not None,
            "detail": f"lines 2, 4{', 6, 8' if req.lines == 8 else ''} in {group}"
            if group
            else "the even lines do not share a rhyme group",
        }
    )
    pattern = match_tone_pattern(text)
    items.append(
        {
            "name": "tones",
            "asked": req.tones,
            "ok": pattern is not None,
            "detail": f"平仄 pattern {pattern}" if pattern else "fits no standard 平仄 pattern",
        }
    )
    return items
