"""All user-facing wording in one place, so tone and safety phrasing stay consistent.

Functions here are pure: they take identifications, catalog profiles and answers and return
text in the tiny markup of bot.messages (**bold** only).
"""

from __future__ import annotations

from collections.abc import Sequence

# A top guess below knowledge_base.answer_types.UNSURE_BELOW is never presented as "most likely" (nor
# described in answers): shown_answer says what a reply names.
from bot.messages import to_plain
from knowledge_base.answer import candidates_sentence, photo_candidates
from knowledge_base.answer_types import PhotoContext, shown_answer
from knowledge_base.catalog import DANGEROUS, SEVERITY, Catalog

DISCLAIMER = (
    "⚠️ An app cannot make a mushroom safe to eat. Never eat a wild mushroom on the word of an app, "
    "a photo or a book: have it checked in person by an expert. Poisoning? Call your poison centre "
    "or emergency number now."
)

# Plain danger words for every verdict. "unknown" is always presented as "treat as poisonous".
VERDICT_WORDS = {
    "deadly": "☠️ **DEADLY - can kill**",
    "poisonous": "🛑 **POISONOUS - do not eat**",
    "unknown": "❓ **UNKNOWN - treat it as poisonous**",
    "inedible": "🚫 **Inedible - do not eat**",
    "edible_with_caution": "⚠️ **Edible only with expert preparation - treat as do-not-eat**",
    "edible": "**Reportedly edible - never eat on the word of an app**",
}

NOT_RELIABLE = "**I can't identify this reliably: treat it as poisonous.**"
# Under every first reply; the full DISCLAIMER goes behind "More".
SHORT_DISCLAIMER = "⚠️ Never eat a wild mushroom on an app's word."
# An answer given while the first index build runs: it comes from the catalog, without guide passages.
INDEX_BUILDING = "(The field guides are still being indexed: {progress}. This answer comes from the species catalog.)"
# A species is named with confidence, but the model is not allowed (or not sure enough) to rule
# out its dangerous lookalikes from a photo: the verdict stays "unknown".
CANT_RULE_OUT = "**A photo can't rule out this mushroom's dangerous lookalikes: treat it as poisonous.**"

PHOTO_TIPS = (
    "Tips for a better identification (send several photos of the same mushroom together):\n"
    "• the cap from above\n"
    "• the gills (or pores) underneath\n"
    "• the whole stem with its base dug out of the soil (not cut)\n"
    "• a size reference (a coin, a knife, your hand) and the habitat (trees nearby)"
)

# Field checks that matter for a whole genus, used on top of (or instead of) the species profile.
GENUS_CHECKS = {
    "amanita": "Dig out the whole stem base: a sac-like cup (volva) or a bulb with rings of scales marks an "
    "Amanita, the genus of the death cap and destroying angels. Check for a ring and white gills.",
    "galerina": "Small brown mushroom on wood with a ring: Galerina contains the same toxins as the death cap. "
    "Check for a rusty-brown spore print and a thin ring.",
    "lepiota": "Small parasol with a ring: several small Lepiota species are deadly. Check the cap scales and ring.",
    "cortinarius": "Rusty-brown spore print and a cobweb veil (cortina) on young specimens: some Cortinarius "
    "destroy the kidneys, with symptoms days later.",
    "gyromitra": "Brain-like, wrinkled cap with a chambered stem: false morel (Gyromitra), not a true morel "
    "(hollow, honeycomb pits, cap joined to the stem).",
    "inocybe": "Small fibrous cap, often split at the rim, and brown spore print: many Inocybe are poisonous.",
    "clitocybe": "White funnel caps with decurrent gills: several Clitocybe contain muscarine.",
    "agaricus": "Scratch the cap and stem base: chrome-yellow staining and an ink/phenol smell mean the "
    "poisonous yellow stainer. Check gill colour (pink to brown, never white in mature caps) and look for a volva.",
    "boletus": "Check the pores and the flesh: red pores or flesh that turns blue quickly suggest a poisonous bolete.",
    "entoloma": "Pink spore print and pinkish mature gills: several Entoloma are poisonous.",
    "russula": "Brittle, chalk-like flesh: check there is no ring and no volva (an Amanita is the danger).",
    "morchella": "Cut it lengthwise: a true morel is hollow from cap to stem; false morels are chambered or cottony.",
    "tricholoma": "Yellow species (Tricholoma equestre) cause rhabdomyolysis; check gill colour and smell.",
}

FEATURE_NAMES = (
    ("volva", "Volva (stem base)"),
    ("ring", "Ring"),
    ("gills_or_pores", "Gills/pores"),
    ("spore_print", "Spore print"),
    ("stem", "Stem"),
    ("cap", "Cap"),
    ("smell", "Smell"),
)


def display_name(label: str, catalog: Catalog) -> str:
    profile = catalog.get(label)
    if profile:
        return profile.display_name
    return label.replace("_", " ").capitalize()


def verdict_line(verdict: str) -> str:
    return VERDICT_WORDS.get(verdict, VERDICT_WORDS["unknown"])


def percent(p: float) -> str:
    value = 100 * p
    if 0 < value < 1:
        return "<1%"
    return f"{value:.0f}%"


def top_guesses(labels: Sequence[str], probabilities: Sequence[float], catalog: Catalog, n: int = 3) -> str:
    lines = []
    for i, (label, p) in enumerate(zip(labels[:n], probabilities[:n], strict=False), start=1):
        edibility = catalog.edibility(label)
        tag = " (deadly)" if edibility == "deadly" else " (poisonous)" if edibility == "poisonous" else ""
        lines.append(f"{i}. {display_name(label, catalog)} - {percent(p)}{tag}")
    return "\n".join(lines)


def features_to_check(label: str, catalog: Catalog, limit: int = 4) -> list[str]:
    """Field features for this species (catalog) plus the genus-level check."""
    checks = []
    genus = label.split("_", 1)[0]
    if genus in GENUS_CHECKS:
        checks.append(GENUS_CHECKS[genus])
    profile = catalog.get(label)
    if profile:
        for key, name in FEATURE_NAMES:
            value = getattr(profile.features, key, None)
            if value:
                checks.append(f"{name}: {value}")
            if len(checks) >= limit:
                break
    return checks


def dangerous_lookalikes(label: str, catalog: Catalog) -> list[str]:
    """Deadly first, then poisonous lookalikes of a species, with how to tell them apart."""
    profile = catalog.get(label)
    if not profile:
        return []
    danger = [lk for lk in profile.lookalikes if lk.edibility in DANGEROUS]
    danger.sort(key=lambda lk: SEVERITY.get(lk.edibility, 99))
    return [
        f"{display_name(lk.species, catalog)} ({lk.edibility.upper()}): {lk.how_to_tell}" for lk in danger
    ]


def identification_text(
    labels: Sequence[str],
    probabilities: Sequence[float],
    verdict: str,
    abstained: bool,
    danger_probability: float,
    photo_count: int,
    catalog: Catalog,
    notes: Sequence[str] = (),
    dangerous: Sequence[tuple[str, float]] = (),
) -> tuple[str, str]:
    """The reply to a photo: (first reply, the rest behind "More").

    Verdict and action first; then the dangerous species behind the verdict, by name; then the
    model's best matches. Field checks, lookalikes and photo tips follow behind "More".
    """
    first: list[str] = []
    more: list[str] = []
    photos = f" ({photo_count} photos, one observation)" if photo_count > 1 else ""
    top = labels[0] if labels else None
    top_class = catalog.edibility(top) if top else "unknown"
    shown = shown_verdict(verdict, abstained, labels)
    if abstained or not labels:
        first.append(f"{verdict_line('unknown')}. I can't identify this reliably. Do not eat it.")
    else:
        action = {"deadly": " Do not eat it.", "unknown": " Do not eat it."}.get(verdict, "")
        first.append(f"{verdict_line(verdict)}.{action}")
    # The dangerous species behind the verdict, named: the same list every answer about this photo uses.
    photo, candidates = photo_and_candidates(labels, probabilities, verdict, abstained, dangerous, catalog)
    if candidates and candidates != [top]:
        share = dict(dangerous)
        names = []
        for lab in candidates:
            profile = catalog.get(lab)
            bits = [profile.common_names[0]] if profile and profile.common_names else []
            bits += [catalog.edibility(lab).upper()] + ([percent(share[lab])] if lab in share else [])
            names.append(f"{profile.scientific_name if profile else display_name(lab, catalog)} ({', '.join(bits)})")
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        first.append(candidates_sentence(photo, candidates, listed, "en"))
    if labels:
        reliable = named_species(labels, probabilities, verdict, abstained) is not None
        heading = f"Most likely{photos}" if reliable else f"My best guesses{photos} - not reliable"
        first.append(f"**{heading}:**\n" + top_guesses(labels, probabilities, catalog))
    first.extend(notes)
    if verdict == "unknown" and not abstained and top_class in ("edible", "edible_with_caution"):
        more.append(f"{display_name(top, catalog)} is listed as {top_class.replace('_', ' ')} when an expert has "
                    "identified it in person, but I never call a mushroom edible from a photo: its lookalikes "
                    "can look the same in a picture.")
    profile = catalog.get(top) if top else None
    if profile and verdict == top_class and not abstained:
        more.append(profile.edibility_note)
    checks = features_to_check(top, catalog) if top else []
    if checks:
        more.append("**Check in the field:**\n" + "\n".join(f"• {c}" for c in checks))
    dangers = dangerous_lookalikes(top, catalog) if top else []
    if dangers:
        more.append("**Deadly or poisonous lookalikes:**\n" + "\n".join(f"• {d}" for d in dangers))
    if shown == "unknown" or abstained:
        more.append(PHOTO_TIPS)
    more.append(DISCLAIMER)
    first.append(SHORT_DISCLAIMER)
    return "\n\n".join(first), "\n\n".join(more)


def shown_verdict(verdict: str, abstained: bool, labels: Sequence[str]) -> str:
    """The verdict a photo's reply shows: "unknown" when the model abstained or named nothing."""
    return shown_answer(verdict, abstained, labels[0] if labels else None, 0.0)[0]


def named_species(labels: Sequence[str], probabilities: Sequence[float], verdict: str, abstained: bool) -> str | None:
    """The species the reply names as "most likely" (None: it lists only unreliable guesses). The same
    definition the vision evaluation counts backend parity on (vision_model.metrics.shown_answers)."""
    if not labels:
        return None
    return shown_answer(verdict, abstained, labels[0], probabilities[0])[1]


def photo_and_candidates(labels: Sequence[str], probabilities: Sequence[float], verdict: str, abstained: bool,
                         dangerous: Sequence[tuple[str, float]], catalog: Catalog) -> tuple[PhotoContext, list[str]]:
    """The photo as answers see it, and the dangerous species behind its verdict (worst first)."""
    shown = shown_verdict(verdict, abstained, labels)
    photo = PhotoContext(labels[0] if labels else None, probabilities[0] if probabilities else 0.0, shown,
                         abstained, list(dangerous))
    return photo, photo_candidates(photo, catalog) if shown in DANGEROUS | {"unknown"} else []


def identification_card(labels: Sequence[str], probabilities: Sequence[float], verdict: str, abstained: bool,
                        dangerous: Sequence[tuple[str, float]], catalog: Catalog, notes: Sequence[str] = ()) -> dict:
    """The identification as data, for a front door that draws it (the web page): the same verdict,
    candidates and guesses as identification_text, never an "edible" the text would not say."""
    photo, candidates = photo_and_candidates(labels, probabilities, verdict, abstained, dangerous, catalog)
    top = labels[0] if labels else None
    return {
        "verdict": photo.verdict,
        "verdict_text": to_plain(verdict_line(photo.verdict)),
        "reliable": named_species(labels, probabilities, verdict, abstained) is not None,
        "top": [{"label": lab, "name": display_name(lab, catalog), "probability": round(float(p), 4),
                 "verdict": catalog.edibility(lab)} for lab, p in zip(labels[:3], probabilities[:3], strict=False)],
        "dangerous": [{"label": lab, "name": display_name(lab, catalog), "verdict": catalog.edibility(lab)}
                      for lab in candidates],
        "checks": features_to_check(top, catalog) if top else [],
        "lookalikes": dangerous_lookalikes(top, catalog) if top else [],
        "notes": list(notes),
        "warning": SHORT_DISCLAIMER,
    }


def lookalikes_text(label: str, catalog: Catalog) -> str:
    profile = catalog.get(label)
    name = display_name(label, catalog)
    if not profile or not profile.lookalikes:
        return (
            f"I have no lookalike list for {name}. Many mushrooms have deadly lookalikes: "
            "treat any doubt as poisonous.\n\n" + DISCLAIMER
        )
    ordered = sorted(profile.lookalikes, key=lambda lk: SEVERITY.get(lk.edibility, 99))
    lines = [
        f"• {display_name(lk.species, catalog)} - {verdict_line(lk.edibility)}\n  How to tell: {lk.how_to_tell}"
        for lk in ordered
    ]
    return f"**Lookalikes of {name}:**\n" + "\n".join(lines) + "\n\n" + DISCLAIMER


def sources_text(label: str | None, catalog: Catalog, citations: Sequence[dict], model_version: str | None) -> str:
    parts = []
    if citations:
        lines = []
        for c in citations:
            title = c.get("title") or c.get("source") or "source"
            source = c.get("source")
            lines.append(f"• {title}" + (f" ({source})" if source and source != title else ""))
        parts.append("**Sources of my last answer:**\n" + "\n".join(lines))
    if label:
        profile = catalog.get(label)
        if profile:
            refs = [f"• {r.title}" + (f" - {r.url}" if r.url else "") for r in profile.references]
            parts.append(f"**References for {display_name(label, catalog)}:**\n" + "\n".join(refs))
    if model_version:
        parts.append(
            f"Photo identification: a vision transformer fine-tuned on labelled field photos (model {model_version})."
        )
    if not parts:
        return "I have no sources to show yet: send a photo or ask a question first."
    parts.append(
        "Edibility comes from the project's species catalog, checked against current references; "
        "old field guides are quoted only where they agree with it."
    )
    return "\n\n".join(parts)


def help_text(is_admin: bool) -> str:
    lines = [
        "**I identify mushrooms from photos and answer questions about them.**",
        "",
        "Send a photo (or several photos of the same mushroom together: cap, gills, whole stem base).",
        "Then ask follow-ups like \"is it poisonous?\", \"lookalikes?\" or \"what about the first one?\".",
        "Someone ate a wild mushroom? Tell me at once: first aid comes first.",
        "I understand English, Deutsch, français, español, italiano and Nederlands.",
        "",
        "/identify - identify the photo(s) you send with it or next",
        "/ask <question> - ask about a species or your last photo",
        "/lookalikes - dangerous lookalikes of your last photo's species",
        "/sources - where my information comes from",
        "/more - the rest of my last answer",
        "/new - start a new conversation (forget the photos and questions so far)",
        "/correct <species> - tell me what your last photo really shows (or /correct unknown)",
        "/consent on|off - may I keep your photos to improve the model? (off unless you say on)",
        "/forget - delete everything I keep about you: this chat, your feedback and your photos",
        "/about - the model, the data and my limits",
        "/help - this message",
    ]
    if is_admin:
        lines += ["", "Admin: /status - model and index status; /reingest - rebuild the knowledge base; "
                  "/review - users' feedback waiting for review"]
    lines += ["", DISCLAIMER]
    return "\n".join(lines)


def start_text(is_admin: bool) -> str:
    return "Hello! 🍄\n\n" + help_text(is_admin)


UNKNOWN_COMMAND = "I don't know the command /{name}."
# Feedback on identifications (bot.feedback).
FEEDBACK_RIGHT = "Thank you: noted that the identification was right."
FEEDBACK_UNSURE = "Thank you: noted that you are not sure about it. An expert looks at it."
FEEDBACK_CHANGED = "Thank you: changed your answer from \"{old}\" to \"{new}\"."
FEEDBACK_WHICH = ("Which species is it? Reply /correct <species name> (Latin or common name), "
                  "or /correct unknown if you don't know.")
FEEDBACK_CORRECTED = "Thank you: noted that your photo shows {species}. An expert reviews it before the model learns it."
FEEDBACK_NO_PHOTO = "There is no identification in this chat to correct. Send a photo first."
FEEDBACK_UNKNOWN_SPECIES = ("I don't know a species called \"{name}\". Try its Latin or common name "
                            "(e.g. /correct Amanita phalloides), or /correct unknown if you don't know.")
FEEDBACK_EMPTY = "Which species does your last photo show? For example: /correct Cantharellus cibarius"
CONSENT_ASK = ("May I keep the photos you send, to help improve the model? They are kept only if you say "
               "/consent on, reviewed by experts, and deleted when you say /forget. Until then I keep "
               "only a fingerprint of each photo and your answer.")
CONSENT_ON = "Thank you: from now on I keep the photos you send (/consent off stops it, /forget deletes them)."
CONSENT_OFF = "OK: I don't keep your photos (only a fingerprint and your answers). /forget deletes those too."
CONSENT_STATUS = "Keeping your photos: {state}. Change it with /consent on or /consent off."
CONSENT_USAGE = "Say /consent on to let me keep your photos, or /consent off to stop."
FORGOTTEN = ("Done: I deleted this conversation, your {votes} feedback answer(s) and {photos} kept photo(s). "
             "Nothing about you is left with me.")
EMPTY_QUESTION = "What would you like to know? For example: /ask is the death cap poisonous?"
NEED_PHOTO = (
    "Which mushroom do you mean? Send a photo of it first (cap, gills and the whole stem base), "
    "or name the species, e.g. \"is Amanita muscaria poisonous?\"."
)
IDENTIFY_PROMPT = (
    "Send me the photo(s) of one mushroom now: cap from above, gills underneath, and the whole stem "
    "base dug out. Several photos sent together count as one observation."
)
NOT_ADMIN = "Sorry, only the bot's administrators can use /{name}."
RATE_LIMITED = "You're sending photos quickly - please wait {seconds} s and send it again."
MESSAGES_RATE_LIMITED = (
    "You're sending messages quickly - please wait {seconds} s and try again. If someone ate a wild mushroom, "
    "call a poison centre or emergency number now."
)
UNSUPPORTED = (
    "I can only look at photos. {what} isn't something I can identify: please send a photo of the mushroom "
    "(JPEG, PNG or WebP)."
)
NO_PHOTO_YET = "I haven't seen a photo in this chat yet. Send one first, then ask."
SOMETHING_WENT_WRONG = (
    "Sorry, something went wrong on my side while handling that. Please try again in a moment. "
    "Until then, treat any unidentified mushroom as poisonous."
)
KNOWLEDGE_UNAVAILABLE = (
    "My field-guide knowledge base isn't available right now, so I can't answer questions. "
    "Photo identification still works. Treat any doubt as poisonous."
)
MODEL_UNAVAILABLE = (
    "Photo identification isn't available right now (the model could not be loaded). "
    "Treat any unidentified mushroom as poisonous."
)
NEW_CONVERSATION = (
    "New conversation: I've forgotten the photos and questions of this chat. Send a photo of a mushroom "
    "or ask me about one."
)
