"""Other tools' adapter folders in and out: each module reads and writes one tool's format (PEFT, AdapterHub's
`adapters`) without importing it."""
