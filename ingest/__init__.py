"""Knowledge-base ingest: guides + species catalog -> chunks -> MiniLM embeddings -> a new version of
the knowledge base's vector store (knowledge_base.vectorstore), switched to atomically.

Public entry points (see docs/ARCHITECTURE.md):
- ingest.pipeline: reingest(), rollback(), ensure_index(), IngestReport
- ingest.store: the builder's side of the store (alias switch, re-ingest lease, orphaned builds)
CLI: python -m ingest [run|rollback|status|gc]
"""
