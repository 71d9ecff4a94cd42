"""Species facts, the vector store of field-guide text, retrieval and grounded answers."""
