"""Knowledge-base ingest: guides + species catalog -> chunks -> MiniLM embeddings -> versioned Chroma.

Public entry points (see docs/ARCHITECTURE.md):
- ingest.pipeline: reingest(), rollback(), ensure_index(), IngestReport
- ingest.store: open_serving(), serving_info(), all_chunks(), get_client()
- ingest.embeddings: MiniLMEmbeddings, MiniLMChromaFunction
CLI: python -m ingest [run|rollback|status]
"""
