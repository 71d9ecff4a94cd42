"""What an answer is, apart from how it is composed: the types that the answerer, the optional LLM
rephraser, the bot and the API exchange, and the one check every text passes before it reaches a user
(never permission to eat). Kept apart from knowledge_base.answer so that the rephraser can use them
without importing the answerer that imports it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


@dataclass
class Citation:
    source: str
    title: str
    excerpt: str


@dataclass
class Answer:
    answer: str  # the first reply: verdict and action first, about FIRST_REPLY_CHARS at most
    species: str | None
    verdict: str | None
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    more: str = ""  # the rest of the answer, behind a "More" button or /more
    language: str = "en"  # the language of the answer's fixed sentences (the question's, where we have them)
    topic: str | None = None  # "photo", "genus:<genus>", "toxin:<name>", "first_aid", "ask_which", "off_topic"
    candidates: list[str] = field(default_factory=list)  # dangerous species named for a photo (labels)
    first_aid: bool = False  # the answer leads with poisoning first aid

    @property
    def full_text(self) -> str:
        return f"{self.answer} {self.more}".strip()

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "species": self.species,
            "verdict": self.verdict,
            "citations": [asdict(c) for c in self.citations],
            "abstained": self.abstained,
            "more": self.more,
            "language": self.language,
            "topic": self.topic,
            "candidates": list(self.candidates),
            "first_aid": self.first_aid,
        }


UNSURE_BELOW = 0.5  # a top guess below this probability is not described as the photo's species


def shown_answer(verdict: str, abstained: bool, top: str | None, probability: float) -> tuple[str, str | None]:
    """What a reply about a photo tells: the verdict it shows ("unknown" when the model abstained or named
    nothing) and the species it names as "most likely" (None when it only lists unreliable guesses)."""
    named = top if top and not abstained and probability >= UNSURE_BELOW else None
    return ("unknown" if abstained or not top else verdict), named


@dataclass
class PhotoContext:
    """What the chat's last photo showed; every reply about that photo follows its verdict."""

    top: str | None  # the model's top label
    probability: float
    verdict: str  # the photo's safety verdict (knowledge_base.catalog.VERDICTS)
    abstained: bool = False
    dangerous: list[tuple[str, float]] = field(default_factory=list)  # dangerous candidates, most probable first

    @classmethod
    def from_dict(cls, data: dict) -> PhotoContext:
        return cls(top=data.get("top"), probability=float(data.get("probability") or 0.0),
                   verdict=str(data.get("verdict") or "unknown"), abstained=bool(data.get("abstained")),
                   dangerous=[(str(lab), float(p)) for lab, p in (data.get("dangerous") or [])])

    def to_dict(self) -> dict:
        return {"top": self.top, "probability": self.probability, "verdict": self.verdict,
                "abstained": self.abstained, "dangerous": [[lab, p] for lab, p in self.dangerous]}


_PERMISSION = re.compile(
    r"\b(yes|sure|absolutely|of course|go ahead)\b[,!.]?\s+(you\s+)?(can|may|could|should)?\s*(safely\s+)?"
    r"(eat|cook|try|enjoy|consume)\b"
    r"|(?<!not )(?<!never )\b(safe|fine|ok|okay|good) to (eat|consume|cook)\b"
    r"|(?<!not )(?<!never )(?<!only )\byou (can|may|could) (safely )?(eat|consume|cook and eat)\b"
    r"|\bgo ahead and (eat|cook|try)\b|\benjoy (it|them|your (meal|mushrooms?))\b|\bbon app[eé]tit\b",
    re.I)


def gives_permission_to_eat(text: str) -> bool:
    """True when a text tells the user they may eat a mushroom (the one thing we never say)."""
    return bool(_PERMISSION.search(text))
