"""The model and the knowledge base behind every front door: loaded once, photos decoded by one rule,
single photos batched, the serving index followed.

    engine = Engine.from_settings(settings)           # local model + index, or the API (INFERENCE_URL)
    result, decoded = await engine.identify([jpeg_bytes])    # decoded.notes: photos skipped
    answer = await engine.ask("is it poisonous?", photo=PhotoContext(...))

The conversation core (bot.core.BotCore) and the HTTP API (bot.api) both go through these methods,
so a photo gets the same species, verdict and notes whichever door it came in by.

- Loading: lazily on first use (chat bots), or in a background thread that retries until both are
  in (`start()`, the API, whose /readyz reports it). Either way one loader, one lock.
- Decoding: `decode_photos` skips an unreadable photo with a note and fails only when none is
  usable; big phone photos are decoded reduced (vision_model.images), bombs are refused.
- Batching: single-photo identifications that arrive while the model is busy run together in one
  `identify_each` call (the model is faster per photo in batches; at low load nothing waits).
- Following: an open answerer stays on the index version it opened; a re-ingest or rollback by
  any process moves the alias, so the engine looks every INDEX_CHECK_S and swaps in the new one
  (opened first, then one reference swap: requests in flight keep the old one). The same for the
  model when MODEL_URI is `models:/<name>@champion`: every MODEL_CHECK_S the engine looks where the
  alias points; a new version is downloaded, loaded beside the old one and smoke-checked, then
  swapped in by one reference; one that fails to load or to pass leaves the old one serving.
Blocking work runs on two pools: photos on WORKER_THREADS threads, questions on their own, so a
queue of photos never delays a text question.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Settings
from vision_model.images import ImageError, decode_image

log = logging.getLogger(__name__)

MAX_BATCH = 16  # photos per identify_each call when requests queue up
# How often the engine looks whether the serving index moved (a re-ingest or rollback run by another
# process, e.g. `python -m ingest run` or the Kubernetes Job).
INDEX_CHECK_S = 30.0
# How long the background loader waits before trying again (the index may still be building).
LOAD_RETRY_SECONDS = 5.0
MAX_LOAD_RETRY_SECONDS = 60.0


class Unavailable(RuntimeError):
    """The model or the knowledge base cannot be used right now (`component`: "model" or "index")."""

    def __init__(self, component: str, detail: str = "") -> None:
        super().__init__(detail or f"the {component} is not loaded")
        self.component = component


@dataclass
class Decoded:
    images: list[Any]  # the readable photos, decoded
    used: list[int]  # their 1-based numbers among the photos sent
    notes: list[str]  # one sentence per photo skipped


def decode_photos(photos: Sequence[bytes], settings: Settings) -> Decoded:
    """The one decoding rule: every readable photo, and a note for each one skipped. ImageError (its
    message for the user, its `reason` for the API's status) only when none is usable."""
    decoded, problems = Decoded([], [], []), []
    for i, data in enumerate(photos, start=1):
        try:
            decoded.images.append(decode_image(data, max_bytes=settings.max_image_bytes,
                                               max_pixels=settings.max_image_pixels))
            decoded.used.append(i)
        except ImageError as exc:
            problems.append((i, exc))
    if not decoded.images:
        first = problems[0][1]
        message = str(first) if len(problems) == 1 else f"I couldn't read any of those photos. {first}"
        raise ImageError(message, first.reason)
    decoded.notes = [f"I skipped photo {i}: {exc}" for i, exc in problems]
    return decoded


def inference_threads() -> int | None:
    """CPU threads for one inference: the container's CPU limit (cgroup v2 cpu.max) when there
    is one, since the CPU count a process sees is the node's, and running 16 threads on a
    2-CPU quota gets the pod throttled. None: let the classifier decide."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def load_model_dir(folder) -> Any:
    """The production classifier of a model directory (None: the bundled release)."""
    from vision_model.classifier import Classifier

    return Classifier.load(folder, threads=inference_threads())


def smoke_check(classifier: Any) -> None:
    """A model must label a photo before it serves: a plain image gets finite probabilities over its labels."""
    import numpy as np
    from PIL import Image

    [result] = classifier.identify_each([Image.new("RGB", (96, 96), (150, 110, 70))])
    probabilities = [p.probability for p in result.top_k]
    if not result.top_k or not np.all(np.isfinite(probabilities)) or not np.isfinite(result.danger_probability):
        raise ValueError("smoke check failed: the model gave no finite answer on a plain image")


def read_index_info(settings: Settings) -> dict[str, Any]:
    """The serving index (knowledge_base.vectorstore.serving_info); {} when it cannot be read."""
    try:
        from knowledge_base.vectorstore import serving_info

        return dict(serving_info(settings) or {})
    except Exception as error:  # noqa: BLE001 - the version is informative, never blocking
        log.info("index version unavailable: %s", error)
        return {}


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        classifier: Any = None,
        classifier_factory: Callable[[], Any] | None = None,
        answerer: Any = None,
        answerer_factory: Callable[[], Any] | None = None,
        follow_index: bool = True,
        lazy: bool = True,
        model_uri: str | None = None,
    ) -> None:
        self.settings = settings
        # models:/<name>@<alias>: followed like the index (None: a folder, loaded once).
        self.model_uri = model_uri
        self.model_registry_version: str | None = None
        self.classifier = classifier  # None until loaded
        self.answerer = answerer
        self._classifier_factory = classifier_factory
        self._answerer_factory = answerer_factory
        self._answerer_injected = answerer is not None
        # An injected answerer (tests) or a remote one (the API follows its own index) is not followed.
        self._follow = follow_index and answerer is None and answerer_factory is not None
        self.lazy = lazy  # False: requests never load; the background loader does (the API)
        self.index_info: dict[str, Any] = {}
        self.errors: dict[str, str] = {}  # component -> why it is not loaded (for /readyz)
        self._load_lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self._index_checked_at = float("-inf")
        self._model_checked_at = float("-inf")
        self._model_lock = threading.Lock()
        self.prediction_log = None
        if settings.prediction_log:
            from vision_model.monitor import PredictionLog

            self.prediction_log = PredictionLog(settings.prediction_log)
        workers = max(1, settings.worker_threads)
        self.vision_pool = ThreadPoolExecutor(workers, thread_name_prefix="vision")
        self.io_pool = ThreadPoolExecutor(max(4, workers), thread_name_prefix="answers")
        self.max_batch = MAX_BATCH
        self.on_batch: Callable[[int], None] | None = None  # the API's batch-size histogram
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._batch_task: asyncio.Task | None = None
        self._stop = threading.Event()
        self._loader: threading.Thread | None = None
        self._refresh_on_start = False
        self.index_build: Any = None  # the BuildProgress of a background build started by refresh_sources

    @classmethod
    def local(cls, settings: Settings, *, model_dir=None, **kwargs) -> Engine:
        """The model of MODEL_URI / MODEL_DIR (a folder, or a registered model) and the index in Chroma, in
        this process."""
        from vision_model import registry

        source = model_dir or settings.model_uri or settings.model_dir
        if registry.is_registry_uri(source):
            kwargs.setdefault("model_uri", str(source))

        def load_classifier():
            started = time.perf_counter()
            version, folder = None, source
            if registry.is_registry_uri(source):
                try:
                    folder, version = registry.local_model_dir(str(source))
                except Exception as error:  # noqa: BLE001 - no champion yet, or the registry is down
                    # Serve MODEL_DIR (else the bundled release) meanwhile; follow_model swaps the champion in
                    # once there is one.
                    log.warning("no model at %s yet (%s): serving %s until there is", source, error,
                                settings.model_dir or "the bundled release")
                    folder = settings.model_dir
            classifier = load_model_dir(folder)
            classifier.registry_version = version
            log.info("model %s loaded in %.1fs", classifier.version, time.perf_counter() - started)
            return classifier

        def open_answerer():
            from knowledge_base.answer import Answerer

            answerer = Answerer.from_settings(settings)
            store = getattr(answerer.retriever, "store", None)
            if store is not None:
                # Load (and on a first run export) the embedding model now, under the engine's load lock, not
                # at the first question: beside a photo's first model load, two threads would import
                # transformers at once and can catch it half-initialised.
                store.embeddings.encoder  # noqa: B018 - loads it
            return answerer

        kwargs.setdefault("classifier_factory", load_classifier)
        kwargs.setdefault("answerer_factory", open_answerer)
        return cls(settings, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, *, model_dir=None, **kwargs) -> Engine:
        """Local, or the HTTP API when INFERENCE_URL is set (it follows its own index)."""
        if not settings.inference_url:
            return cls.local(settings, model_dir=model_dir, **kwargs)
        from bot import remote

        kwargs.setdefault("classifier_factory", lambda: remote.RemoteClassifier.from_settings(settings))
        kwargs.setdefault("answerer_factory", lambda: remote.RemoteAnswerer.from_settings(settings))
        kwargs.setdefault("follow_index", False)
        return cls(settings, **kwargs)

    # --- state ---------------------------------------------------------------------------
    @property
    def index_loaded(self) -> bool:
        """An injected answerer counts as loaded; one we opened must have found the index
        (Answerer.from_settings falls back to catalog-only answers when there is none)."""
        if self.answerer is None:
            return False
        return self._answerer_injected or getattr(self.answerer, "retriever", True) is not None

    @property
    def ready(self) -> bool:
        return self.classifier is not None and self.index_loaded

    @property
    def model_version(self) -> str | None:
        return getattr(self.classifier, "version", None) if self.classifier is not None else None

    @property
    def model_source(self) -> str | None:
        """Where the serving model came from, for /status and /healthz: 'models:/x@champion (version 3)'."""
        if not self.model_uri:
            return None
        return f"{self.model_uri} (version {self.model_registry_version or '?'})"

    # --- loading ---------------------------------------------------------------------------
    def get_classifier(self):
        """The classifier, loaded once (thread-safe; call from a worker thread)."""
        return self._loaded("model")

    def get_answerer(self):
        """The answerer on the current index version (thread-safe; call from a worker thread)."""
        self.follow_index()
        return self._loaded("index")

    def _loaded(self, component: str, *, load_now: bool = False):
        attribute = "classifier" if component == "model" else "answerer"
        if getattr(self, attribute) is None:
            if not (self.lazy or load_now):
                raise Unavailable(component, f"The {component} is still loading; try again shortly.")
            with self._load_lock:
                if getattr(self, attribute) is None:
                    self._load(component)
        return getattr(self, attribute)

    def _load(self, component: str) -> None:
        factory = self._classifier_factory if component == "model" else self._answerer_factory
        if factory is None:
            raise Unavailable(component, f"no {component} configured")
        try:
            loaded = factory()
        except Exception as error:
            self.errors[component] = f"{type(error).__name__}: {error}"
            raise Unavailable(component, self.errors[component]) from error
        self.errors.pop(component, None)
        if component == "model":
            self.model_registry_version = getattr(loaded, "registry_version", None)
            self._model_checked_at = time.monotonic()
            self.classifier = loaded
            return
        if getattr(loaded, "retriever", None) is not None and self._follow:
            # The version before the answerer: once the answerer is in, /readyz says ready and names it.
            self.index_info = read_index_info(self.settings)
            self._index_checked_at = time.monotonic()
        if self.answerer is None or getattr(loaded, "retriever", None) is not None:
            self.answerer = loaded  # a catalog-only answerer serves until the index is there

    def load_classifier(self) -> None:
        """Load the model now (at start-up) instead of on the first photo."""
        self._loaded("model", load_now=True)

    def start(self, *, refresh_sources: bool = False) -> None:
        """Load both in a background thread, retrying until they are in, then follow the index (and with
        `refresh_sources`, first re-ingest guides changed since the index was built: refresh_sources)."""
        if self._answerer_injected and not self.index_info:
            self.index_info = read_index_info(self.settings)  # what /v1/info and /metrics name
        if self.classifier is not None and self._answerer_injected and not self.model_uri:
            return  # everything injected: nothing to load or to follow
        self._stop.clear()  # an app's lifespan may run more than once (test clients do)
        self._refresh_on_start = refresh_sources
        self._loader = threading.Thread(target=self._load_and_follow, name="engine-loader", daemon=True)
        self._loader.start()

    def stop(self) -> None:
        self._stop.set()
        if self._loader is not None:
            self._loader.join(timeout=5)

    def close(self) -> None:
        self.stop()
        self.vision_pool.shutdown(wait=False, cancel_futures=True)
        self.io_pool.shutdown(wait=False, cancel_futures=True)

    def wait_ready(self, timeout: float, component: str | None = None) -> bool:
        """For tests and benchmarks: block until loaded (both, or one `component`), until loading it
        failed, or until the timeout passes. True when loaded."""
        def done() -> bool:
            if component is None:
                return self.ready
            return self.classifier is not None if component == "model" else self.index_loaded

        deadline = time.monotonic() + timeout
        while not done() and (component is None or component not in self.errors) and time.monotonic() < deadline:
            time.sleep(0.05)
        return done()

    def _load_and_follow(self) -> None:
        if self._refresh_on_start:
            self.refresh_sources()
        delay = LOAD_RETRY_SECONDS
        while not self._stop.is_set() and not self.ready:
            for component, loaded in (("model", self.classifier is not None), ("index", self.index_loaded)):
                if loaded:
                    continue
                if component == "index" and self.answerer is not None and self._follow \
                        and not read_index_info(self.settings).get("available"):
                    continue  # still no index: a metadata read, not a whole catalog-only answerer again
                previous = self.errors.get(component)
                try:
                    with self._load_lock:
                        self._load(component)
                except Unavailable:
                    if self.errors.get(component) != previous:  # log each distinct failure once
                        log.warning("%s not loaded yet (retrying): %s", component, self.errors[component])
                if component == "index" and self.answerer is not None and not self.index_loaded:
                    self.errors["index"] = ("no serving index yet (answering from the catalog only); "
                                            "run `python -m ingest run`")
            if self.ready:
                log.info("ready: model %s, index %s", self.model_version, self.index_info.get("version"))
                break
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_LOAD_RETRY_SECONDS)
        if not (self._follow or self.model_uri):
            return
        while not self._stop.wait(min(INDEX_CHECK_S, self.settings.model_check_s)):
            self.follow_index()
            self.follow_model()

    def refresh_sources(self, announce: Callable[[str], None] | None = None,
                        done: Callable[[Any], None] | None = None, *,
                        progress: Callable[[int, int, str], None] | None = None,
                        build_missing: bool = False) -> threading.Thread | None:
        """Guides linked or edited since the serving index was built: re-ingest them in the background
        (ingest.pipeline.refresh_in_background) while this version answers, then follow the new one.
        With `build_missing`, also the first build when there is no index (the console's first start).
        `announce` says it once (default: the log); `done` gets the IngestReport; `progress` every step.
        While it runs, `index_build` describes it (/status, and answers given from the catalog meanwhile).
        The thread, or None."""
        if not self._follow:
            return None  # a remote engine, or an injected answerer: not this process's index to build
        from ingest.pipeline import refresh_in_background
        from ingest.progress import BuildProgress

        tracker = BuildProgress(progress)

        def finished(report) -> None:
            tracker.finish()
            self.follow_index(now=True)
            if done is not None:
                done(report)

        changes, thread = refresh_in_background(self.settings, on_done=finished, progress=tracker,
                                                build_missing=build_missing)
        if thread is None:
            return None
        self.index_build = tracker
        if changes:
            shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
            (announce or log.warning)(f"The field guides changed since the knowledge base was built ({shown}): "
                                      "updating it in the background; answers use the current version until then.")
        else:
            (announce or log.warning)("Building the knowledge base in the background (first start, a few minutes). "
                                      "Photos are identified now; until it is ready, questions are answered "
                                      "from the species catalog alone.")
        return thread

    @property
    def building_index(self) -> str | None:
        """What a running background build is doing ('embedding passages 1,200 of 2,834 (42 %), about
        1 min left'), or None when none runs."""
        build = self.index_build
        return None if build is None or build.finished else build.describe()

    def follow_index(self, *, now: bool = False) -> None:
        """Move to the serving index version when a re-ingest or rollback switched it (at most every
        INDEX_CHECK_S unless `now`). The new answerer is opened first; a failure keeps the old one."""
        if not self._follow or self.answerer is None:
            return
        if not now and time.monotonic() - self._index_checked_at < INDEX_CHECK_S:
            return
        if not self._follow_lock.acquire(blocking=False):
            return  # another thread is looking right now
        try:
            self._index_checked_at = time.monotonic()
            info = read_index_info(self.settings)
            if not info.get("collection") or info.get("collection") == self.index_info.get("collection"):
                return
            try:
                answerer = self._answerer_factory()
            except Exception as error:  # noqa: BLE001 - keep serving the version we have
                log.warning("could not open the new index %s: %s", info.get("collection"), error)
                return
            if getattr(answerer, "retriever", None) is not None:
                self.index_info = info  # first the version, then the answerer: /readyz never sees one without the other
                self.answerer = answerer
                self.errors.pop("index", None)
                log.info("now serving index %s", info.get("collection"))
        finally:
            self._follow_lock.release()

    def follow_model(self, *, now: bool = False) -> None:
        """Move to the registered version MODEL_URI's alias points at, when it moved (at most every
        MODEL_CHECK_S unless `now`). Loaded and smoke-checked beside the serving one; any failure keeps it."""
        if not self.model_uri or self.classifier is None:
            return
        if not now and time.monotonic() - self._model_checked_at < self.settings.model_check_s:
            return
        if not self._model_lock.acquire(blocking=False):
            return  # another thread is looking right now
        try:
            from vision_model import registry

            self._model_checked_at = time.monotonic()
            try:
                version = registry.champion_version(self.model_uri)
                if version == self.model_registry_version:
                    return
                started = time.perf_counter()
                classifier = load_model_dir(registry.download(registry.parse_uri(self.model_uri)[0], version))
                smoke_check(classifier)
            except Exception as error:  # noqa: BLE001 - keep serving the model we have
                self.errors["model_update"] = f"{type(error).__name__}: {error}"
                log.warning("could not move to the model %s points at: %s", self.model_uri, error)
                return
            previous = self.model_version
            self.model_registry_version = version
            self.classifier = classifier  # one reference: requests in flight finish on the old one
            self.errors.pop("model_update", None)
            log.info("now serving model %s (registry version %s, was %s), loaded in %.1fs",
                     classifier.version, version, previous, time.perf_counter() - started)
        finally:
            self._model_lock.release()

    # --- photos ----------------------------------------------------------------------------
    async def identify(self, photos: Sequence[bytes]) -> tuple[Any, Decoded]:
        """One observation (one or several photos of one mushroom) -> (Identification, what was decoded:
        which photos were used, and a note for each one skipped)."""
        decoded = await asyncio.get_running_loop().run_in_executor(
            self.vision_pool, decode_photos, photos, self.settings)
        return await self.identify_images(decoded.images), decoded

    def _follow_model_soon(self) -> None:
        """An engine without the background loader (the chat bots load lazily) looks for a moved alias when
        photos come in: in a thread of its own, so no photo waits for a download."""
        if (self.model_uri and self.classifier is not None
                and time.monotonic() - self._model_checked_at >= self.settings.model_check_s
                and (self._loader is None or not self._loader.is_alive())):
            threading.Thread(target=self.follow_model, name="model-follower", daemon=True).start()

    async def identify_images(self, images: list[Any]):
        """Decoded photos of one observation -> Identification. A single photo joins the batch."""
        self._follow_model_soon()
        loop = asyncio.get_running_loop()
        classifier = self.classifier or await loop.run_in_executor(self.vision_pool, self.get_classifier)
        if len(images) > 1 or self.max_batch <= 1:
            result = await loop.run_in_executor(self.vision_pool, classifier.identify, images)
        else:
            future = loop.create_future()
            self._pending.append((images[0], future))
            if self._batch_task is None or self._batch_task.done():
                self._batch_task = asyncio.create_task(self._run_batches(classifier))
            result = await future
        self._record(result, len(images))
        return result

    def _record(self, result, photos: int) -> None:
        if self.prediction_log is not None:
            try:
                self.prediction_log.record(result, photos=photos)
            except Exception as error:  # noqa: BLE001 - monitoring never fails an identification
                log.warning("prediction log: %s", error)

    async def identify_each(self, photos: Sequence[bytes]) -> tuple[list[Any], Decoded]:
        """Each photo on its own -> (identifications of the readable ones, what was decoded)."""
        self._follow_model_soon()
        loop = asyncio.get_running_loop()
        decoded = await loop.run_in_executor(self.vision_pool, decode_photos, photos, self.settings)
        classifier = self.classifier or await loop.run_in_executor(self.vision_pool, self.get_classifier)
        results = await loop.run_in_executor(self.vision_pool, classifier.identify_each, decoded.images)
        for result in results:
            self._record(result, 1)
        return results, decoded

    async def _run_batches(self, classifier) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = [(image, future) for image, future in self._pending[: self.max_batch] if not future.done()]
            del self._pending[: self.max_batch]
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(
                    self.vision_pool, classifier.identify_each, [image for image, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error (and so a reply)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

    # --- questions -------------------------------------------------------------------------
    async def ask(self, question: str, species: str | None = None, photo=None, poisoning: bool = False):
        """The answerer's Answer, on the answers pool."""
        def run():
            return self.get_answerer().ask(question, species, photo=photo, poisoning=poisoning)

        return await asyncio.get_running_loop().run_in_executor(self.io_pool, run)
