"""The conversation core: every feature of the bot, once, for every front door.

    core = BotCore.from_settings(get_settings())
    replies = await core.handle(Event(platform="telegram", chat_id="42", user_id="7", photos=[jpeg]))

Adapters (Telegram, Discord, console) translate platform updates into `bot.messages.Event` and
render the `Reply` list; the HTTP API calls `identify`, `identify_each` and `ask` directly. All of
them reach the model and the knowledge base through one `bot.engine.Engine` (one loader, one
decoding rule, one batcher, one index follower). Blocking work runs off the event loop so one slow
photo never stalls other chats (photos and questions on separate pools, see bot.engine), and a
re-ingest on its own thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bot import replies as say
from bot.engine import Decoded, Engine, Unavailable
from bot.followups import photo_reference, refers_back
from bot.limits import PhotoRateLimiter
from bot.logs import log_handled
from bot.memory import ChatMemory, StoredIdentification
from bot.messages import Button, Event, Reply
from bot.remote import RemoteError
from bot.settings import Settings
from ingest.progress import BuildProgress
from knowledge_base import phrases
from knowledge_base.answer_types import PhotoContext
from knowledge_base.catalog import Catalog, default_catalog
from knowledge_base.language import detect_language
from knowledge_base.resolve import SpeciesResolver
from knowledge_base.triage import triage
from vision_model.feedback import UNKNOWN_SPECIES, FeedbackStore, photo_sha256
from vision_model.images import ImageError

log = logging.getLogger(__name__)

# Questions that need a subject: without a photo or a named species we ask for one.
_SUBJECT_INTENTS = {"toxicity", "lookalikes", "features", "symptoms", "habitat"}
PROGRESS_EVERY_S = 15.0


class UserFacingError(Exception):
    """An expected problem whose message is shown to the user as it is."""

    def __init__(self, message: str, outcome: str = "bad_input", reason: str | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.reason = reason  # why a photo was refused (vision_model.images.ImageError.reason), if it was


@dataclass
class Outcome:
    replies: list[Reply]
    outcome: str = "ok"  # for the log line: ok, abstained, bad_input, rate_limited, refused, error...


@dataclass
class _Identified:
    stored_id: int
    verdict: str
    abstained: bool
    text: str
    card: dict  # replies.identification_card: the same identification as data


MORE_LABEL = {"en": "More", "de": "Mehr", "fr": "Plus", "es": "Más", "it": "Altro", "nl": "Meer"}


def _current_subject(history, idents) -> tuple[StoredIdentification | None, str | None]:
    """What the chat is talking about now: the photo or the species of the latest reply that had one."""
    by_id = {i.id: i for i in idents}
    for entry in reversed(history):
        if entry.role != "bot":
            continue
        photo_id = entry.data.get("photo_id")
        if photo_id in by_id:
            return by_id[photo_id], None
        if entry.data.get("species"):
            return None, entry.data["species"]
    return (idents[-1] if idents else None), None


def identification_buttons(ident_id: int) -> list[Button]:
    return [Button("More", "more:last"),
        Button("Is it poisonous?", f"poison:{ident_id}"),
        Button("Lookalikes", f"look:{ident_id}"),
        Button("Sources", f"src:{ident_id}"),
        # Feedback on the identification (bot.feedback); adapters put these on a row of their own.
        Button("Right", f"fb:{ident_id}:right"),
        Button("Wrong", f"fb:{ident_id}:wrong"),
        Button("Not sure", f"fb:{ident_id}:unsure"),
    ]


VOTE_WORDS = {"right": "right", "wrong": "wrong", "unsure": "not sure"}


class BotCore:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        catalog: Catalog | None = None,
        memory: ChatMemory | None = None,
        rate_limiter: PhotoRateLimiter | None = None,
        message_limiter: PhotoRateLimiter | None = None,
        reingest: Callable[..., Any] | None = None,
        **engine_kwargs: Any,
    ) -> None:
        """engine_kwargs (classifier, classifier_factory, answerer, answerer_factory) build the Engine
        when none is given."""
        self.settings = settings
        self.engine = engine or Engine(settings, **engine_kwargs)
        self.catalog = catalog or default_catalog()
        self._memory = memory
        self._feedback: FeedbackStore | None = None
        self._memory_lock = threading.Lock()
        self.rate_limiter = rate_limiter or PhotoRateLimiter(settings.photo_rate_limit, settings.photo_rate_window_s)
        self.message_limiter = message_limiter or PhotoRateLimiter(settings.message_rate_limit,
                                                                   settings.message_rate_window_s)
        self._resolver = SpeciesResolver(self.catalog)
        self.started_at = time.monotonic()
        self.photos_in_flight = 0
        self._reingest_task: asyncio.Task | None = None
        self._reingest = reingest  # None: ingest.pipeline.reingest (imported when first needed)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, *, model_dir=None, **kwargs) -> BotCore:
        """Local model + local knowledge base, or the HTTP API when INFERENCE_URL is set."""
        engine_kwargs = {k: kwargs.pop(k) for k in ("classifier", "classifier_factory", "answerer",
                                                    "answerer_factory") if k in kwargs}
        return cls(settings, engine=Engine.from_settings(settings, model_dir=model_dir, **engine_kwargs), **kwargs)

    @property
    def memory(self) -> ChatMemory:
        """Chat memory, opened on first use (the HTTP API, which keeps no conversation, never opens it)."""
        if self._memory is None:
            with self._memory_lock:
                if self._memory is None:
                    self._memory = ChatMemory(self.settings.database_url)
        return self._memory

    @property
    def feedback(self) -> FeedbackStore:
        """The feedback store, on the chat database (opened with the memory)."""
        if self._feedback is None:
            engine = self.memory.engine  # (outside the lock: opening the memory takes it)
            with self._memory_lock:
                if self._feedback is None:
                    salt = self.settings.feedback_salt.get_secret_value() if self.settings.feedback_salt else None
                    store = FeedbackStore(engine, salt=salt, photos_url=self.settings.feedback_photos)
                    try:  # retention: once per process, when the store is first used
                        store.delete_older_than(self.settings.feedback_retention_days)
                    except Exception:
                        log.exception("could not apply the feedback retention")
                    self._feedback = store
        return self._feedback

    def load_classifier(self) -> None:
        """Load the model now (at start-up) instead of on the first photo."""
        self.engine.load_classifier()

    @property
    def model_version(self) -> str | None:
        return self.engine.model_version

    def close(self) -> None:
        if self._reingest_task is not None:
            self._reingest_task.cancel()
        self.engine.close()
        if self._memory is not None:
            self._memory.close()

    async def _io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.engine.io_pool, fn, *args)

    # --- what every front door calls (the HTTP API directly, chats through handle) -----------
    async def identify(self, photos: list[bytes]) -> tuple[Any, Decoded]:
        """One observation -> (Identification, which photos were used and notes on those skipped). UserFacingError when no photo
        is usable (its `reason` says why, for the API's status code) or the model is not available."""
        try:
            return await self.engine.identify(photos)
        except ImageError as exc:  # also: the remote API refused a photo
            raise UserFacingError(str(exc), "bad_input", exc.reason) from None
        except Unavailable as exc:
            log.warning("vision model unavailable: %s", exc)
            raise UserFacingError(say.MODEL_UNAVAILABLE, "unavailable") from None

    async def identify_each(self, photos: list[bytes]) -> tuple[list[Any], Decoded]:
        """Each photo on its own (the API's /v1/identify/each), with the same decoding rule."""
        try:
            return await self.engine.identify_each(photos)
        except ImageError as exc:
            raise UserFacingError(str(exc), "bad_input", exc.reason) from None
        except Unavailable as exc:
            log.warning("vision model unavailable: %s", exc)
            raise UserFacingError(say.MODEL_UNAVAILABLE, "unavailable") from None

    async def ask(self, question: str, species: str | None = None, photo: PhotoContext | None = None,
                  poisoning: bool = False):
        """The knowledge base's Answer. UserFacingError when it cannot be opened."""
        try:
            return await self.engine.ask(question, species, photo, poisoning)
        except Unavailable as exc:
            log.warning("knowledge base unavailable: %s", exc)
            raise UserFacingError(say.KNOWLEDGE_UNAVAILABLE, "unavailable") from None

    # --- entry point ---------------------------------------------------------------------
    async def handle(self, event: Event) -> list[Reply]:
        """Handle one event; always returns at least one reply and writes one log line."""
        started = time.perf_counter()
        try:
            result = await self._dispatch(event)
        except UserFacingError as exc:
            result = Outcome([Reply(str(exc))], exc.outcome)
        except RemoteError as exc:  # the inference API is down or loading: its message is friendly
            log.warning("inference service: %s", exc)
            result = Outcome([Reply(str(exc))], "unavailable")
        except Exception:
            log.exception("failed to handle a %s event", event.kind)
            result = Outcome([Reply(say.SOMETHING_WENT_WRONG)], "error")
        if not result.replies:  # never a silent drop
            result = Outcome([Reply(say.SOMETHING_WENT_WRONG)], "error")
        log_handled(event.platform, event.chat_id, event.kind, time.perf_counter() - started, result.outcome)
        return result.replies

    async def _dispatch(self, event: Event) -> Outcome:
        if event.photos:
            if event.command and event.command not in ("identify", "start", "help"):
                # A photo captioned with another command: the photo is what matters.
                log.debug("photo with /%s: identifying", event.command)
            caption = (event.args if event.command else event.text).strip()
            if caption and triage(caption) is not None:
                return await self._identify_a_poisoning(event, caption)
            return await self._identify(event)
        if event.problems:  # attachments the adapter could not fetch, and nothing else usable
            return Outcome([Reply(" ".join(event.problems))], "bad_input")
        wait = self.message_limiter.check(f"{event.platform}:{event.user_id}")
        if wait:
            text = f"{event.text} {event.args}"
            found = triage(text)
            if found is not None:  # never rate-limit first aid: the fixed sentences cost nothing
                return Outcome([Reply(phrases.first_aid_alone(found.pet, detect_language(text)))], "rate_limited")
            return Outcome([Reply(say.MESSAGES_RATE_LIMITED.format(seconds=wait))], "rate_limited")
        if event.button:
            return await self._button(event)
        if event.command:
            return await self._command(event)
        if event.unsupported:
            return Outcome([Reply(say.UNSUPPORTED.format(what=_capitalise(event.unsupported)))], "bad_input")

        text = event.text.strip()
        if not text:
            return Outcome([Reply(say.EMPTY_QUESTION)], "bad_input")
        return await self._question(event, text)

    # --- photos --------------------------------------------------------------------------
    async def _identify(self, event: Event) -> Outcome:
        photos = list(event.photos)
        notes = list(event.problems)
        limit = self.settings.max_images_per_observation
        if len(photos) > limit:
            notes.append(f"I looked at the first {limit} of your {len(photos)} photos (the limit per observation).")
            photos = photos[:limit]
        wait = self.rate_limiter.check(f"{event.platform}:{event.user_id}", len(photos))
        if wait:
            return Outcome([Reply(say.RATE_LIMITED.format(seconds=wait))], "rate_limited")
        self.photos_in_flight += 1
        try:
            result, decoded = await self.identify(photos)
            used = [photos[n - 1] for n in decoded.used]
            ident = await self._io(self._remember_identification, event, result, len(decoded.used),
                                   notes + decoded.notes, [photo_sha256(p) for p in used])
            await self._io(self._keep_photos_with_consent, event, used)
        finally:
            self.photos_in_flight -= 1
        outcome = "abstained" if ident.abstained or ident.verdict == "unknown" else "ok"
        return Outcome([Reply(ident.text, identification_buttons(ident.stored_id), {"identification": ident.card})],
                       outcome)

    async def _identify_a_poisoning(self, event: Event, caption: str) -> Outcome:
        """A photo captioned "my son ate this": first aid about this photo first, then its identification.
        First aid comes even when the photo cannot be identified."""
        try:
            identified = await self._identify(event)
        except UserFacingError as exc:
            identified = Outcome([Reply(str(exc))], exc.outcome)
        ident = None
        if identified.outcome in ("ok", "abstained"):
            idents = await self._io(self.memory.recent_identifications, event.platform, event.chat_id)
            ident = idents[-1] if idents else None
        answered = await self._question(event, caption, ident)
        return Outcome(answered.replies + identified.replies, "first_aid")

    def _keep_photos_with_consent(self, event: Event, photos: list[bytes]) -> None:
        """Only for users who said /consent on; a photo store that fails must not fail the identification."""
        key = self.feedback.user_key(event.platform, event.user_id)
        if self.feedback.consent(key):
            try:
                self.feedback.keep_photos(key, photos)
            except Exception:
                log.exception("could not keep the photos of a consenting user")

    def _remember_identification(self, event: Event, result, photo_count: int, notes: list[str],
                                 photo_hashes: list[str] | None = None) -> _Identified:
        """Word the reply and store the identification with the exchange (one transaction)."""
        labels = [p.label for p in result.top_k]
        probabilities = [float(p.probability) for p in result.top_k]
        verdict, abstained = result.verdict, bool(result.abstained)
        danger = float(result.danger_probability)
        dangerous = [(p.label, float(p.probability)) for p in getattr(result, "dangerous", None) or []]
        text, more = say.identification_text(labels, probabilities, verdict, abstained, danger, photo_count,
                                             self.catalog, notes, dangerous)
        card = say.identification_card(labels, probabilities, verdict, abstained, dangerous, self.catalog, notes)
        stored_id = self.memory.add_identification(
            event.platform, event.chat_id,
            labels=labels, probabilities=probabilities, verdict=verdict, abstained=abstained,
            danger_probability=danger, photo_count=photo_count, model_version=str(result.model_version),
            dangerous=dangerous, photo_hashes=photo_hashes,
            exchange=[("user", event.kind, f"[{photo_count} photo(s)]", None),
                      ("bot", event.kind, text, {"more": more})],
        )
        return _Identified(stored_id, verdict, abstained, text, card)

    def _remember_exchange(self, event: Event, user_text: str, bot_text: str, data: dict | None) -> None:
        self.memory.add_exchange(event.platform, event.chat_id, [
            ("user", event.kind, user_text, None), ("bot", event.kind, bot_text, data)])

    # --- questions -----------------------------------------------------------------------
    async def _question(self, event: Event, question: str, ident: StoredIdentification | None = None) -> Outcome:
        """Answer a question about a named species, a remembered photo, or the chat's subject.

        A possible poisoning is answered first aid first, also when the knowledge base is down.
        """
        try:
            return await self._answer_question(event, question, ident)
        except Exception:
            found = triage(question)
            if found is None:
                raise
            log.exception("answering a possible poisoning failed: sending first aid alone")
            return Outcome([Reply(phrases.first_aid_alone(found.pet, detect_language(question)))], "error")

    async def _answer_question(self, event: Event, question: str, ident: StoredIdentification | None) -> Outcome:
        idents = await self._io(self.memory.recent_identifications, event.platform, event.chat_id)
        history = await self._io(self.memory.recent_history, event.platform, event.chat_id, 10)
        named = [m.label for m in self._resolver.find_species(question)] if self._resolver else []
        subject = None  # the chat's current subject when the question names nothing
        if ident is None:
            position = photo_reference(question)
            if position is not None:
                if not idents:
                    return Outcome([Reply(say.NO_PHOTO_YET)], "no_photo")
                if not -len(idents) <= position < len(idents):
                    count = len(idents)
                    return Outcome([Reply(
                        f"I only remember {count} photo{'s' if count != 1 else ''} in this chat "
                        f"(I keep the last {self.memory.keep_identifications}). Which one do you mean?"
                    )], "no_photo")
                ident = idents[position]
            elif not named or refers_back(question):
                ident, subject = _current_subject(history, idents)

        photo = None
        header = ""
        if ident is not None and (not named or ident.top_label in named or refers_back(question)):
            photo = PhotoContext(top=ident.top_label, probability=ident.probabilities[0] if ident.probabilities
                                 else 0.0, verdict=ident.verdict, abstained=ident.abstained,
                                 dangerous=list(ident.dangerous))
            if idents and ident.id != idents[-1].id:
                position = next((i for i, x in enumerate(idents) if x.id == ident.id), 0)
                header = f"About your photo #{position + 1}:"
        poisoning = any(h.data.get("first_aid") for h in history[-4:] if h.role == "bot")

        answer = await self.ask(question, subject, photo, poisoning)
        text, citations = self._answer_text(answer, header)
        label = answer.species or (photo.top if photo else None)
        more = answer.more
        if citations:
            titles = list(dict.fromkeys(c["title"] or c["source"] for c in citations))
            more = "\n\n".join(x for x in (more, "**Sources:**\n" + "\n".join(f"• {t}" for t in titles[:5])) if x)
        await self._io(self._remember_exchange, event, question, text, {
            "citations": citations, "species": answer.species, "more": more, "first_aid": answer.first_aid,
            "photo_id": ident.id if photo is not None else None, "language": answer.language})
        buttons = [Button(MORE_LABEL.get(answer.language, "More"), "more:last")] if more else []
        if label:
            if ident is not None and label == ident.top_label:
                buttons += [Button("Lookalikes", f"look:{ident.id}"), Button("Sources", f"src:{ident.id}")]
            elif len(f"looks:{label}") <= 64:
                buttons += [Button("Lookalikes", f"looks:{label}"), Button("Sources", "srcs:last")]
        outcome = "first_aid" if answer.first_aid else "abstained" if answer.abstained else "ok"
        return Outcome([Reply(text, buttons, {"citations": citations, "first_aid": answer.first_aid})], outcome)

    def _answer_text(self, answer, header: str) -> tuple[str, list[dict]]:
        citations = [
            {"source": c.source, "title": c.title, "excerpt": (c.excerpt or "")[:300]} for c in answer.citations
        ]
        parts = [" ".join(x for x in (header, answer.answer.strip() or "I don't have an answer to that.") if x)]
        if not answer.first_aid and answer.topic != "off_topic":
            parts.append(say.SHORT_DISCLAIMER)
        building = self.engine.building_index
        if building and not self.engine.index_loaded and answer.topic != "off_topic":
            parts.append(say.INDEX_BUILDING.format(progress=building))
        return "\n\n".join(parts), citations

    async def _more(self, event: Event) -> Outcome:
        """The rest of the last answer (the "More" button and /more)."""
        history = await self._io(self.memory.recent_history, event.platform, event.chat_id, 10)
        last = next((h for h in reversed(history) if h.role == "bot" and "more" in h.data), None)
        if last is None or not last.data.get("more"):
            return Outcome([Reply("There is nothing more to my last answer. Ask me something, or send a photo.")])
        return Outcome([Reply(last.data["more"])])

    # --- buttons -------------------------------------------------------------------------
    async def _button(self, event: Event) -> Outcome:
        action, _, arg = (event.button or "").partition(":")
        if action == "more":
            return await self._more(event)
        if action in ("poison", "look", "src"):
            ident = None
            if arg.isdigit() and len(arg) <= 12:  # a forged payload can carry any number: a row id is short
                ident = await self._io(self.memory.get_identification, event.platform, event.chat_id, int(arg))
            if ident is None:
                return Outcome([Reply(
                    "I no longer remember that photo (I keep the last few per chat). Please send it again."
                )], "expired")
            if action == "poison":
                return await self._question(event, "Is it poisonous?", ident)
            if action == "look":
                return Outcome([Reply(self._lookalikes_for(ident.top_label))])
            return await self._sources(event, ident)
        if action == "fb":
            number, _, vote = arg.partition(":")
            return await self._vote(event, number, vote)
        if action == "looks" and arg:
            return Outcome([Reply(self._lookalikes_for(arg))])
        if action == "srcs":
            return await self._sources(event, None)
        return Outcome([Reply("That button has expired. Send a photo or /help to start again.")], "bad_input")

    def _lookalikes_for(self, label: str | None) -> str:
        if not label:
            return say.NOT_RELIABLE + "\n\n" + say.DISCLAIMER
        return say.lookalikes_text(label, self.catalog)

    async def _sources(self, event: Event, ident: StoredIdentification | None) -> Outcome:
        history = await self._io(self.memory.recent_history, event.platform, event.chat_id, 10)
        last_answer = next((h for h in reversed(history) if h.role == "bot" and h.data.get("citations")), None)
        citations = last_answer.data["citations"] if last_answer else []
        if ident is None:
            idents = await self._io(self.memory.recent_identifications, event.platform, event.chat_id)
            ident = idents[-1] if idents else None
        label = ident.top_label if ident and not ident.abstained else None
        if label is None and last_answer:
            label = last_answer.data.get("species")
        version = ident.model_version if ident else self.model_version
        return Outcome([Reply(say.sources_text(label, self.catalog, citations, version))])

    # --- feedback (bot.feedback) -----------------------------------------------------------
    async def _vote(self, event: Event, number: str, vote: str) -> Outcome:
        ident = None
        if number.isdigit() and len(number) <= 12 and vote in VOTE_WORDS:
            ident = await self._io(self.memory.get_identification, event.platform, event.chat_id, int(number))
        if ident is None:  # not in this chat (or forged, or forgotten): nothing is stored
            return Outcome([Reply("I no longer remember that photo (I keep the last few per chat), so I can't "
                                  "record feedback on it. Send it again if you like.")], "expired")
        return await self._record_vote(event, ident, vote, None)  # "wrong" asks which species it is

    async def _record_vote(self, event: Event, ident, vote: str, label: str | None) -> Outcome:
        def record():
            key = self.feedback.user_key(event.platform, event.user_id)
            asked = self.feedback.consent(key) is not None
            result = self.feedback.record(key, event.platform, ident, vote, label)
            if not asked:
                self.feedback.set_consent(key, False)  # asked once; off until the user says /consent on
            return result, asked

        result, asked = await self._io(record)
        if label is not None:
            name = self.catalog.get(label).display_name if label in self.catalog.labels else "an unknown species"
            text = say.FEEDBACK_CORRECTED.format(species=name)
        elif vote == "wrong":
            text = say.FEEDBACK_WHICH  # /correct adds the species to this vote
        elif result.changed_from:
            text = say.FEEDBACK_CHANGED.format(old=VOTE_WORDS[result.changed_from], new=VOTE_WORDS[vote])
        else:
            text = say.FEEDBACK_RIGHT if vote == "right" else say.FEEDBACK_UNSURE
        if not asked:
            text += "\n\n" + say.CONSENT_ASK
        return Outcome([Reply(text)])

    async def _correct(self, event: Event, args: str) -> Outcome:
        if not args:
            return Outcome([Reply(say.FEEDBACK_EMPTY)], "bad_input")
        idents = await self._io(self.memory.recent_identifications, event.platform, event.chat_id)
        if not idents:
            return Outcome([Reply(say.FEEDBACK_NO_PHOTO)], "no_photo")
        label = self._species_label(args)
        if label is None:
            return Outcome([Reply(say.FEEDBACK_UNKNOWN_SPECIES.format(name=args.strip()[:60]))], "bad_input")
        ident = idents[-1]
        vote = "right" if label == ident.top_label else "wrong"
        return await self._record_vote(event, ident, vote, label)

    def _species_label(self, text: str) -> str | None:
        """A user's species name as a catalog label ("unknown" when they say they don't know); None when
        it names no species, or several."""
        if text.strip().lower() in ("unknown", "i don't know", "dont know", "don't know", "?"):
            return UNKNOWN_SPECIES
        found = self._resolver.find_species(text) if self._resolver else []
        return found[0].label if len(found) == 1 else None

    # The HTTP API keeps no conversation: an identification goes out as a signed token, comes back with the vote.
    def feedback_token(self, result, photos: list[bytes]) -> str:
        return self.feedback.sign({
            "model_version": str(result.model_version), "labels": [p.label for p in result.top_k],
            "probabilities": [round(float(p.probability), 6) for p in result.top_k], "verdict": result.verdict,
            "photo_hashes": [photo_sha256(p) for p in photos]})

    async def api_feedback(self, user: str, token: str, vote: str, label: str | None) -> dict:
        """A vote from an API client on behalf of its user `user` (stored as a salted hash)."""
        ident = self.feedback.verify(token)
        if ident is None:
            raise UserFacingError("That feedback token was not issued by this service, or it was damaged: send "
                                  "the feedback_token of a /v1/identify response.", reason="bad_token")
        species = None
        if label:
            species = self._species_label(label)
            if species is None:
                raise UserFacingError(say.FEEDBACK_UNKNOWN_SPECIES.format(name=label.strip()[:60]),
                                      reason="unknown_species")
        if vote == "right" and species not in (None, ident["labels"][0]):
            vote = "wrong"  # "right, it is X" where X is not the model's answer
        stored = StoredIdentification(
            id=ident["id"], labels=ident["labels"], probabilities=ident["probabilities"], verdict=ident["verdict"],
            abstained=False, danger_probability=0.0, photo_count=len(ident["photo_hashes"]),
            model_version=ident["model_version"], created_at=datetime.now(UTC), photo_hashes=ident["photo_hashes"])
        key = self.feedback.user_key("api", user)
        result = await self._io(self.feedback.record, key, "api", stored, vote, species)
        return {"recorded": vote, "label": species, "changed_from": result.changed_from,
                "model_version": ident["model_version"]}

    async def api_forget(self, user: str) -> dict:
        votes, photos = await self._io(self.feedback.forget_user, self.feedback.user_key("api", user))
        return {"votes_deleted": votes, "photos_deleted": photos}

    def _review(self, event: Event, args: str) -> str:
        """Admins: `/review` lists the pending feedback; `/review accept ID [species]`, `/review reject ID`
        (the same queue as `python -m vision_model feedback`)."""
        parts = args.split(maxsplit=2)
        if not parts:
            items = self.feedback.rows(review="pending")
            if not items:
                return "No feedback waiting for review."
            lines = [f"**{len(items)} feedback item(s) to review** (the oldest first):"]
            for row in items[:10]:
                said = row["user_label"] or ("(agrees)" if row["vote"] == "right" else "?")
                lines.append(f"#{row['id']}: model {json.loads(row['labels'])[0]} ({row['verdict']}), "
                             f"user says {row['vote']} {said}, photos kept: {'yes' if row['photos_kept'] else 'no'}")
            lines.append("Reply /review accept ID [species] or /review reject ID.")
            return "\n".join(lines)
        action = parts[0].lower()
        if action not in ("accept", "reject") or len(parts) < 2 or not parts[1].lstrip("#").isdigit():
            return "Use /review, /review accept ID [species] or /review reject ID."
        label = None
        if action == "accept" and len(parts) == 3:
            label = self._species_label(parts[2])
            if label in (None, UNKNOWN_SPECIES):
                return say.FEEDBACK_UNKNOWN_SPECIES.format(name=parts[2][:60])
        reviewer = f"{event.platform}:{self.feedback.user_key(event.platform, event.user_id)[:12]}"
        try:
            row = self.feedback.review(int(parts[1].lstrip("#")), "accepted" if action == "accept" else "rejected",
                                       reviewer, label)
        except KeyError:
            return f"There is no feedback item {parts[1]}."
        except ValueError as exc:
            return f"Item {parts[1]}: {exc}."
        species = f" as {row['reviewed_label']}" if row["reviewed_label"] else ""
        return f"Item #{row['id']} {row['review']}{species}."

    async def _consent(self, event: Event, args: str) -> Outcome:
        choice = args.strip().lower()
        key = self.feedback.user_key(event.platform, event.user_id)
        if choice in ("on", "yes", "ja", "oui", "si", "sí"):
            await self._io(self.feedback.set_consent, key, True)
            return Outcome([Reply(say.CONSENT_ON)])
        if choice in ("off", "no", "nein", "non"):
            await self._io(self.feedback.set_consent, key, False)
            return Outcome([Reply(say.CONSENT_OFF)])
        if choice:
            return Outcome([Reply(say.CONSENT_USAGE)], "bad_input")
        state = await self._io(self.feedback.consent, key)
        return Outcome([Reply(say.CONSENT_STATUS.format(state="on" if state else "off"))])

    async def _forget(self, event: Event) -> Outcome:
        def forget():
            self.memory.forget_chat(event.platform, event.chat_id)
            return self.feedback.forget_user(self.feedback.user_key(event.platform, event.user_id))

        votes, photos = await self._io(forget)
        return Outcome([Reply(say.FORGOTTEN.format(votes=votes, photos=photos))])

    # --- commands ------------------------------------------------------------------------
    async def _command(self, event: Event) -> Outcome:
        name, args = event.command, event.args.strip()
        if name == "start":
            return Outcome([Reply(say.start_text(event.is_admin))])
        if name == "help":
            return Outcome([Reply(say.help_text(event.is_admin))])
        if name == "identify":
            return Outcome([Reply(say.IDENTIFY_PROMPT)])
        if name == "ask":
            if not args:
                return Outcome([Reply(say.EMPTY_QUESTION)], "bad_input")
            return await self._question(event, args)
        if name == "lookalikes":
            return await self._lookalikes_command(event, args)
        if name == "sources":
            return await self._sources(event, None)
        if name == "more":
            return await self._more(event)
        if name in ("new", "reset"):
            await self._io(self.memory.forget_chat, event.platform, event.chat_id)
            return Outcome([Reply(say.NEW_CONVERSATION)])
        if name == "about":
            return Outcome([Reply(await self._io(self._about_text))])
        if name == "correct":
            return await self._correct(event, args)
        if name == "consent":
            return await self._consent(event, args)
        if name == "forget":
            return await self._forget(event)
        if name in ("reingest", "status", "review"):
            if not event.is_admin:
                return Outcome([Reply(say.NOT_ADMIN.format(name=name))], "refused")
            if name == "review":
                return Outcome([Reply(await self._io(self._review, event, args))])
            if name == "status":
                return Outcome([Reply(await self._io(self._status_text))])
            return self._start_reingest(event)
        text = say.UNKNOWN_COMMAND.format(name=name) + "\n\n" + say.help_text(event.is_admin)
        return Outcome([Reply(text)], "unknown_command")

    async def _lookalikes_command(self, event: Event, args: str) -> Outcome:
        if args:
            label = self._resolver.resolve_name(args) if self._resolver else self.catalog.resolve(args)
            if not label:
                return Outcome([Reply(
                    f"I don't know the species \"{args}\". Try its Latin name, e.g. /lookalikes Amanita muscaria."
                )], "bad_input")
            return Outcome([Reply(self._lookalikes_for(label))])
        idents = await self._io(self.memory.recent_identifications, event.platform, event.chat_id)
        if not idents:
            return Outcome([Reply(say.NEED_PHOTO)], "no_photo")
        last = idents[-1]
        if last.abstained:
            text = say.NOT_RELIABLE + "\n\n" + self._lookalikes_for(last.top_label)
            return Outcome([Reply(text)], "abstained")
        return Outcome([Reply(self._lookalikes_for(last.top_label))])

    def _index_info(self) -> str:
        building = self.engine.building_index
        try:
            from knowledge_base.vectorstore import serving_info

            info = serving_info(self.settings)
        except Exception as exc:  # an absent index must not break /about or /status
            log.info("no knowledge-base index info: %s", exc)
            info = {}
        if not info or not info.get("available"):
            if building:
                return f"being built ({building}); answers come from the species catalog until then"
            return "not built yet (answers come from the species catalog only)"
        parts = [f"version {info.get('version')}", f"{info.get('count')} passages"]
        if info.get("built_at"):
            parts.append(f"built {info['built_at']}")
        if building:
            parts.append(f"an update is being built ({building})")
        return ", ".join(parts)

    def _about_text(self) -> str:
        version = self.model_version or "not loaded yet"
        labels = getattr(self.engine.classifier, "labels", None)
        species = f"{len(labels)} species" if labels else "the species of its training data"
        return "\n".join([
            "**About this bot**",
            f"Vision model: {version} - a vision transformer fine-tuned on labelled field photos; it knows "
            f"{species}. Any mushroom outside them will be misidentified or flagged as unknown.",
            f"Species catalog: {len(self.catalog)} profiles (edibility, features, lookalikes) from current references.",
            f"Knowledge base: public-domain field guides (1885-1903, read with caution) + the catalog; index: "
            f"{self._index_info()}.",
            f"Limits: up to {self.settings.max_images_per_observation} photos per observation, "
            f"{self.settings.photo_rate_limit} photos per {self.settings.photo_rate_window_s:.0f} s, "
            f"{self.settings.max_image_bytes // (1024 * 1024)} MB per photo.",
            "It is a study aid, not an expert: it can be wrong, and it never tells you a mushroom is safe to eat.",
            "",
            say.DISCLAIMER,
        ])

    def _status_text(self) -> str:
        uptime = int(time.monotonic() - self.started_at)
        reingest = "running" if self._reingest_task and not self._reingest_task.done() else "idle"
        return "\n".join([
            "**Status**",
            f"Model: {self.model_version or 'not loaded yet'}"
            + (f" from {self.engine.model_source}" if getattr(self.engine, "model_source", None) else ""),
            f"Index: {self._index_info()}",
            f"Uptime: {uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s",
            f"Queue: {self.photos_in_flight} photo observation(s) in progress "
            f"({self.settings.worker_threads} worker thread(s))",
            f"Re-ingest: {reingest}",
        ])

    # --- re-ingest -----------------------------------------------------------------------
    def _start_reingest(self, event: Event) -> Outcome:
        if self._reingest_task is not None and not self._reingest_task.done():
            return Outcome([Reply("A re-ingest is already running; I'll report here when it finishes.")], "busy")
        self._reingest_task = asyncio.create_task(self._run_reingest(event))
        return Outcome([Reply("Re-ingest started: rebuilding the knowledge base in the background. "
                              "The bot keeps answering meanwhile; I'll report progress here.")])

    async def _run_reingest(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        send = event.send_later
        last = {"stage": None, "at": 0.0}

        def report(done: int, total: int, stage: str) -> None:  # called on the ingest thread
            now = time.monotonic()
            if send is None or (stage == last["stage"] and now - last["at"] < PROGRESS_EVERY_S):
                return
            last.update(stage=stage, at=now)
            asyncio.run_coroutine_threadsafe(send(Reply(f"Re-ingest: {progress.describe()}")), loop)

        progress = BuildProgress(report)  # the sentence with an estimate of the time left

        started = time.perf_counter()
        try:
            reingest = self._reingest
            if reingest is None:
                from ingest.pipeline import reingest
            report = await asyncio.to_thread(reingest, self.settings, progress=progress)
            ok = bool(getattr(report, "ok", True))
            if ok:  # move to the new version now, not at the next periodic look
                await self._io(partial(self.engine.follow_index, now=True))
            summary = report.summary() if hasattr(report, "summary") else _describe_report(report)
            text = f"Re-ingest finished. {summary}" if ok else summary
            outcome = "ok" if ok else "error"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("re-ingest failed")
            text = f"Re-ingest failed, the previous knowledge base is still serving: {exc}"
            outcome = "error"
        log_handled(event.platform, event.chat_id, "reingest", time.perf_counter() - started, outcome)
        if send is not None:
            try:
                await send(Reply(text))
            except Exception:
                log.exception("could not report the re-ingest result")


def _describe_report(report: Any) -> str:
    if report is None:
        return "done."
    if hasattr(report, "to_dict"):
        report = report.to_dict()
    elif hasattr(report, "__dataclass_fields__"):
        from dataclasses import asdict

        report = asdict(report)
    if isinstance(report, dict):
        return ", ".join(f"{k}={v}" for k, v in report.items() if not isinstance(v, dict | list)) or "done."
    return str(report)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
