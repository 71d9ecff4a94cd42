"""Front doors of the mushroom bot: one conversation core, thin platform adapters."""
