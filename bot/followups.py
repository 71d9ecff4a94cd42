"""Which remembered photo a follow-up question is about.

"is it poisonous?" -> the last photo; "what about the first one?" / "the second one" /
"photo 2" -> that identification in the chat's memory (oldest first); "the previous one"
-> the one before the last. A species named in the question is found by the knowledge
base's resolver, not here.
"""

from __future__ import annotations

import re

ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2,
    "fourth": 3, "4th": 3, "fifth": 4, "5th": 4,
}
RELATIVE = {"last": -1, "latest": -1, "newest": -1, "previous": -2, "earlier": -2, "other": -2}
_THING = r"(one|photo|picture|pic|image|mushroom|shroom|observation|identification|find)"

_ORDINAL = re.compile(
    rf"\b(?:the\s+)?({'|'.join(ORDINALS)})\s+{_THING}\b"  # "the first one", "second photo"
    rf"|\bthe\s+({'|'.join(ORDINALS)})\b\s*[?.!]*\s*$",  # "what about the first?"
    re.I,
)
_NUMBERED = re.compile(rf"\b{_THING}\s*(?:#|no\.?|number)?\s*([1-5])\b|#([1-5])\b", re.I)
_RELATIVE = re.compile(rf"\b(?:the\s+)?({'|'.join(RELATIVE)})\s+{_THING}\b|\bthe one before\b", re.I)
# Words that point back at a photo without saying which: the last one.
_BACK_REFERENCE = re.compile(
    r"\b(it|its|it's|this|that|these|those|them|they|mine|the mushroom|my mushroom|my find|the photo|my photo)\b",
    re.I,
)


def photo_reference(text: str) -> int | None:
    """An index into the remembered identifications (oldest first; negative from the end), or None.

    None means the question does not single out one photo by position.
    """
    m = _ORDINAL.search(text)
    if m:
        return ORDINALS[(m.group(1) or m.group(2)).lower()]
    m = _NUMBERED.search(text)
    if m:
        return int(m.group(2) or m.group(3)) - 1
    m = _RELATIVE.search(text)
    if m:
        return RELATIVE[m.group(1).lower()] if m.group(1) else -2
    return None


def refers_back(text: str) -> bool:
    """True when the question talks about 'it' / 'this' / 'the first one' rather than a named species."""
    return bool(_BACK_REFERENCE.search(text)) or photo_reference(text) is not None
