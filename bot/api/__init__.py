"""The HTTP API: an adapter of the conversation core for programs (the chat bots in INFERENCE_URL mode,
the web page, anyone with the key). Routes in `routes`, bodies in `schemas`, what runs before a route
in `middleware`, wiring and the CLI in `app`; the client that calls it is bot.remote."""

from bot.api.app import create_app, main, max_request_bytes, public_without_key

__all__ = ["create_app", "main", "max_request_bytes", "public_without_key"]
